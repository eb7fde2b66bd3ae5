"""`llmbench coordinator`: run MLPerf LoadGen against running agents and report the result."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Callable

from llmbench.common.auth import add_client_arguments, client_security, server_security
from llmbench.common.stall import HUNG_FACTOR
from llmbench.coordinator.run import demo_rate, exits, find_peak as peak_search, preflight, run_set
from llmbench.coordinator.observe import prometheus
from llmbench.coordinator.loadgen import benchmarks, scenarios, settings as lgsettings
from llmbench.coordinator.mesh.agent_link import LinkConfig
from llmbench.coordinator.mesh.discovery import parse_agents
from llmbench.coordinator.observe.metrics import LogToMetrics, RunMetrics
from llmbench.coordinator.run.outputs import REPORT_FILE
from llmbench.coordinator.observe.progress_text import utilisation_lines
from llmbench.coordinator.report.markdown import AUDITED, finish_run, write_interrupted
from llmbench.coordinator.run.session import CoordinatorConfig, RunResult, run_session
from llmbench.coordinator.observe.status_service import StatusServer


def scenario_help() -> str:
    """--scenario's help: each benchmark's scenarios, from the benchmark table."""
    def listed(b: benchmarks.Benchmark) -> str:
        return ", ".join(s.name + (" (default)" if s is b.scenario(None) else "") for s in b.scenarios)
    return ("one of the benchmark's: " + "; ".join(f"{b.name}: {listed(b)}" for b in benchmarks.BENCHMARKS.values())
            + ". Interactive is Server with 500 ms TTFT / 30 ms TPOT limits; SingleStream issues one query at a "
              "time and reports its 90th-percentile latency")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared with `llmbench run`, and the exit statuses both give."""
    p.epilog = exits.EXIT_STATUSES
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--benchmark", choices=list(benchmarks.BENCHMARKS), default=benchmarks.DEFAULT.name,
                   help="the MLPerf benchmark: its mlperf.conf settings, dataset size and accuracy targets "
                        "(default: %(default)s)")
    p.add_argument("--scenario", help=scenario_help())
    p.add_argument("--mode", default="performance", help="performance or accuracy (default performance)")
    p.add_argument("--compliance", choices=["TEST06"],
                   help="run under the compliance test's audit settings, then check its log (TEST06: first "
                        "token, trailing EOS, token_count)")
    p.add_argument("--dataset", default="synthetic",
                   help="'synthetic' (default), MLPerf's cnn_eval.json, or CNN/DailyMail articles (needs --tokenizer)")
    p.add_argument("--tokenizer", help="tokenizer for raw articles and accuracy: model folder or tokenizer file")
    p.add_argument("--user-conf", help="LoadGen user.conf applied over MLPerf's mlperf.conf")
    p.add_argument("--max-samples", type=int, help="use the first N samples of the dataset")
    p.add_argument("--target-qps", type=float,
                   help="Server target QPS / Offline expected QPS (overrides the conf); SingleStream has no rate: "
                        "its expected latency goes in --user-conf (*.SingleStream.target_latency = MS)")
    p.add_argument("--duration", type=float, help="LoadGen min_duration in seconds (overrides the conf)")
    p.add_argument("--output", type=Path,
                   help="folder for LoadGen's logs and report.md (default: a new results/<timestamp>); an "
                        "earlier run's files there are replaced once this run's are all written (and kept if it "
                        "does not finish), and files under our names that no run wrote are refused")
    p.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines (0: none)")
    p.add_argument("--no-tui", action="store_true", help="progress lines instead of the TUI (shown on a terminal)")
    p.add_argument("--status-port", type=int,
                   help="serve the run's status (Coordinator.WatchRun) here for `llmbench tui --connect`, e.g. 50060")
    p.add_argument("--status-host", default="127.0.0.1",
                   help="address for --status-port (default loopback only; 0.0.0.0 for all)")
    p.add_argument("--status-tls-cert", help="PEM certificate chain: serve the run status over TLS (with --status-tls-key)")
    p.add_argument("--status-tls-key", help="PEM private key of --status-tls-cert")
    p.add_argument("--status-tls-client-ca", help="PEM CA that watchers' certificates must chain to: mutual TLS")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics over HTTP on this port at /metrics")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address for --metrics-port (default loopback only; 0.0.0.0 for all)")
    p.add_argument("--no-agent-timeout", type=float, default=60.0,
                   help="seconds queries may wait with no agent ready (all lost) before the run gives up with "
                        "exit status 2 (default: %(default)g)")
    p.add_argument("--find-peak", action="store_true",
                   help="Server/Interactive: find the highest target QPS that holds the latency limits (short "
                        "bisecting runs from --target-qps, or from a short Offline run, then one confirming run "
                        "LoadGen must call VALID); each run in its own folder, the curve in find-peak.md")
    p.add_argument("--submission-runs", action="store_true",
                   help="every run a submission needs, one after another on the same agents: for Offline and "
                        "--scenario (default Server; SingleStream for llama3.1-8b-edge) a performance, an accuracy "
                        "and a TEST06 run, each in OUTPUT/<scenario>-<kind>; needs --dataset and --tokenizer; "
                        "--target-qps is the latency-bound scenario's (Offline's from --user-conf)")
    p.add_argument("--peak-probe-duration", type=float, default=60.0,
                   help="seconds of each --find-peak probe (default: %(default)g)")
    p.add_argument("--peak-confirm-duration", type=float, default=300.0,
                   help="seconds of the --find-peak confirming run, at least 700 queries' worth for LoadGen's "
                        "early stopping (default: %(default)g)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agents", required=True, help="HOST:PORT[,...] or dns:///NAME:PORT (every ready agent)")
    add_run_arguments(p)
    p.add_argument("--demo", action="store_true", help="demo-scaled settings (short run; printed as such)")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for an agent to answer")
    p.add_argument("--ready-timeout", type=float, default=900.0,
                   help="seconds to wait for an answering agent to finish loading its model")
    p.add_argument("--stall-timeout", type=float, default=LinkConfig.stall_s,
                   help="seconds an agent holding our queries may go without a step before they continue on other "
                        f"agents (a step under way counts until it has run {HUNG_FACTOR:g}x the slowest; default: "
                        "%(default)g)")
    p.add_argument("--agent-timeout", type=float, default=LinkConfig.agent_timeout_s,
                   help="seconds an agent may send no status (nor answer keepalive pings) before it counts as "
                        "lost and its queries continue on other agents")
    add_client_arguments(p)


def output_folder(args: argparse.Namespace) -> Path:
    """--output, or a new results/<timestamp> folder (-2, -3... when runs start in the same second)."""
    if args.output:
        return args.output
    base = Path("results") / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def chosen_scenario(args: argparse.Namespace) -> scenarios.Scenario:
    """--scenario, one of --benchmark's; the benchmark's first when not given."""
    return benchmarks.get(args.benchmark).scenario(args.scenario)


def config_from_args(args: argparse.Namespace, agents: str, output: Path) -> CoordinatorConfig:
    """The run's config, checked (preflight.check) before any agent is started or contacted."""
    for flag in ("status_port", "metrics_port"):
        if not 0 <= (getattr(args, flag) or 0) <= 65535:
            raise ValueError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: not a port number")
    if agents:  # `llmbench run` checks before its agents exist
        parse_agents(agents)
    demo = lgsettings.DEMO if getattr(args, "demo", False) else None
    cfg = CoordinatorConfig(
        agents=agents, output=output, benchmark=args.benchmark, scenario=chosen_scenario(args).name,
        mode=args.mode, dataset=args.dataset,
        tokenizer=args.tokenizer, user_conf=args.user_conf,
        max_samples=(args.max_samples if args.max_samples is not None
                     else demo.samples if demo and args.dataset == "synthetic" else None),
        target_qps=args.target_qps, duration_s=args.duration,
        demo=demo, compliance=args.compliance,
        connect_timeout_s=getattr(args, "connect_timeout", 10.0), ready_timeout_s=getattr(args, "ready_timeout", 900.0),
        progress_s=args.progress, no_agent_timeout_s=args.no_agent_timeout,
        link=LinkConfig(agent_timeout_s=getattr(args, "agent_timeout", LinkConfig.agent_timeout_s),
                        stall_s=getattr(args, "stall_timeout", LinkConfig.stall_s),
                        security=client_security(args)))
    if getattr(args, "submission_runs", False):
        if args.find_peak:
            raise ValueError("--submission-runs and --find-peak are two jobs: run one, then the other")
        run_set.check(cfg)
    return dataclasses.replace(cfg, checked=preflight.check(cfg))


def report(result: RunResult, more_files: str = "") -> int:
    """Print the outcome, and once where its files are (more_files: what else is there, e.g. agent logs);
    the exit status (exits.EXIT_STATUSES)."""
    print()
    if result.compliance_passed is not None:
        print(f"{AUDITED}; the compliance verdict is TEST06's below.")
    for line in result.summary.lines():
        print(line)
    for line in result.accuracy_lines + result.compliance_lines:
        print(line)
    s = result.snapshot
    shares = ", ".join(f"{a.address} {a.queries_done}" for a in s.agents)
    print(f"Queries per agent: {shares}" + (f"; {s.redispatched} re-dispatched" if s.redispatched else ""))
    print("Agent utilisation over the LoadGen test (busy: share of the time with queries in flight; "
          "KV: mean share of the cache in use):")
    for line in utilisation_lines(s):
        print(line)
    for a in s.agents:
        if a.losses:
            print(f"Agent {a.address} lost {a.losses} time(s), {a.redispatched} queries re-dispatched; "
                  f"last: {a.last_error}")
    if result.staging.earlier:
        print(f"replaced {len(result.staging.earlier)} files of an earlier llmbench run in {result.output}")
    print(f"Results: {result.output.resolve()} (LoadGen logs{more_files})")
    print(f"Report: {(result.output / REPORT_FILE).resolve()}")
    if result.duplicates:
        print(f"ERROR: {result.duplicates} duplicate answers were refused (a coordinator bug)")
    if result.error or s.failed:
        print(f"ERROR: {s.failed} queries failed: {result.error or 'see the log above'}")
    failures, status = exits.failures(result), exits.exit_status(result)
    if result.gave_up:
        print(f"Exit status {status}: the run could not go on: {result.gave_up}")
    elif failures:
        print(f"Exit status {status}: {'; '.join(failures)}")
    return status


def wants_tui(args: argparse.Namespace) -> bool:
    return not args.no_tui and sys.stdout.isatty() and sys.stderr.isatty()


# A front that shows a run live (the TUI); given by llmbench.tui, which sits above the coordinator.
LiveFront = Callable[[CoordinatorConfig, RunMetrics], RunResult]


def run_front(cfg: CoordinatorConfig, args: argparse.Namespace, metrics: RunMetrics, say=print,
              live: LiveFront | None = None) -> RunResult:
    """The run with its front: `live` on a terminal, progress lines otherwise; the status and metrics
    endpoints if asked; report.md at the end. Log records also go to the run's log (TUI, watchers)."""
    note = metrics.echo(say)
    with contextlib.ExitStack() as stack:
        handler = LogToMetrics(metrics)
        logging.getLogger("llmbench").addHandler(handler)
        stack.callback(logging.getLogger("llmbench").removeHandler, handler)
        if args.status_port is not None:
            security = server_security(argparse.Namespace(
                tls_cert=args.status_tls_cert, tls_key=args.status_tls_key, tls_client_ca=args.status_tls_client_ca,
                auth_token_file=getattr(args, "auth_token_file", None)), args.status_host)
            status = StatusServer(metrics, args.status_host, args.status_port, security)
            status.start()
            stack.callback(status.stop)
            note(f"run status on {status.address}: watch with `llmbench tui --connect {status.address}`")
        if args.metrics_port is not None:
            exporter = prometheus.exporter(metrics, args.metrics_host, args.metrics_port)
            note(f"Prometheus metrics on http://{args.metrics_host}:{exporter.start()}/metrics")
            stack.callback(exporter.stop)
        cfg = demo_rate.sized(cfg, note, metrics.timings_s)
        if live is not None and wants_tui(args):
            return live(cfg, metrics)
        try:
            result = run_session(cfg, say=say, metrics=metrics)
            finish_run(result, metrics)
        except KeyboardInterrupt as exc:  # watchers learn how it ended before the status server stops
            write_interrupted(cfg, metrics, exits.how(exc))
            metrics.finish("aborted", f"interrupted{exits.how(exc)}")
            raise
        except BaseException as exc:
            metrics.finish("failed", str(exc))
            raise
        return result


def submission_runs(cfg: CoordinatorConfig, args: argparse.Namespace, say=print) -> int:
    """--submission-runs: the set's runs one after another on the same agents, each reported as a run is;
    the worst exit status, and the command that builds the submission from them."""
    runs, statuses = run_set.plan(cfg), []
    for i, run in enumerate(runs, 1):
        run = dataclasses.replace(run, checked=preflight.check(run))
        say(f"submission runs: {i} of {len(runs)}: {run.scenario} {run.compliance or run.mode}, in {run.output}")
        statuses.append(report(run_front(run, args, RunMetrics(), say=say)))
    print()
    print(f"Submission runs: {len(runs)} in {Path(cfg.output).resolve()}, exit statuses {statuses}; build with:")
    print(f"  {run_set.build_command(runs)}")
    return max(statuses)


def check_find_peak(args: argparse.Namespace) -> None:
    if not args.find_peak:
        return
    if not chosen_scenario(args).latency_limits or args.mode != "performance" or args.compliance:
        raise ValueError("--find-peak searches a Server or Interactive performance run (no --mode accuracy, "
                         "no --compliance)")
    for flag in ("peak_probe_duration", "peak_confirm_duration"):
        if not 0 < getattr(args, flag) <= lgsettings.MAX_DURATION_S:
            raise ValueError(f"--{flag.replace('_', '-')} must be in (0, {lgsettings.MAX_DURATION_S:g}] "
                             f"seconds, got {getattr(args, flag)}")


def find_peak(cfg: CoordinatorConfig, args: argparse.Namespace, say=print) -> int:
    """--find-peak: the search's runs, one after another on the same agents; the curve last."""
    def run_at(kind: str, qps: float | None) -> peak_search.Trial:
        trial = peak_search.trial_config(cfg, kind, qps, args.peak_probe_duration, args.peak_confirm_duration)
        trial = dataclasses.replace(trial, checked=preflight.check(trial))
        say(f"find-peak: {kind} run" + (f" at {qps:g} QPS" if qps is not None else " (Offline, for the bracket)")
            + f", {trial.duration_s:g} s, in {trial.output}")
        result = run_front(trial, args, RunMetrics(), say=say)
        for line in result.summary.lines():
            say(line)
        return peak_search.Trial(qps if qps is not None else result.summary.samples_per_s or 0.0, kind,
                                 result.summary)

    peak = peak_search.search(run_at, args.target_qps, say)
    path = peak_search.write(peak, cfg.output)
    print()
    for line in peak.lines():
        print(line)
    print(f"Curve: {path.resolve()}")
    return 0 if peak.qps is not None else exits.FAILED


def run(args: argparse.Namespace, live: LiveFront | None = None) -> int:
    with exits.sigterm_interrupts():
        metrics, output = RunMetrics(), output_folder(args)
        try:
            check_find_peak(args)
            cfg = config_from_args(args, args.agents, output)
            if args.find_peak:
                return find_peak(cfg, args)
            if args.submission_runs:
                return submission_runs(cfg, args)
            result = run_front(cfg, args, metrics, live=live)
        except KeyboardInterrupt as exc:
            return exits.interrupted(exc, output, metrics, "coordinator")
        except BaseException as exc:
            error = exits.after_failure(exc, output, metrics, "coordinator")
            exits.leave_if_loadgen_running(error, "coordinator")
            if error is exc:
                raise
            raise error from exc
        return report(result)
