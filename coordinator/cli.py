"""`llmbench coordinator`: run MLPerf LoadGen against running agents and report the result."""
from __future__ import annotations

import argparse
from pathlib import Path

from llmbench.common.auth import add_client_arguments, client_security
from llmbench.coordinator import settings as lgsettings
from llmbench.coordinator.agent_link import LinkConfig
from llmbench.coordinator.session import (CoordinatorConfig, RunResult, check_choices, leave_if_loadgen_running,
                                          run_session)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared with `llmbench run`."""
    p.add_argument("--scenario", default="Server",
                   help="Offline, Server (default) or Interactive (Server with 500 ms TTFT / 30 ms TPOT limits)")
    p.add_argument("--mode", default="performance", help="performance or accuracy (default performance)")
    p.add_argument("--dataset", default="synthetic",
                   help="'synthetic' (default), MLPerf's cnn_eval.json, or CNN/DailyMail articles (needs --tokenizer)")
    p.add_argument("--tokenizer", help="tokenizer for raw articles and accuracy: model folder or tokenizer file")
    p.add_argument("--user-conf", help="LoadGen user.conf applied over MLPerf's mlperf.conf")
    p.add_argument("--max-samples", type=int, help="use the first N samples of the dataset")
    p.add_argument("--target-qps", type=float, help="Server target QPS / Offline expected QPS (overrides the conf)")
    p.add_argument("--duration", type=float, help="LoadGen min_duration in seconds (overrides the conf)")
    p.add_argument("--output", type=Path, help="folder for LoadGen's logs")
    p.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines (0: none)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agents", required=True, help="HOST:PORT[,...] or dns:///NAME:PORT (every ready agent)")
    add_run_arguments(p)
    p.add_argument("--demo", action="store_true", help="demo-scaled settings (short run; printed as such)")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to wait for an agent to answer")
    p.add_argument("--ready-timeout", type=float, default=900.0,
                   help="seconds to wait for an answering agent to finish loading its model")
    p.add_argument("--agent-timeout", type=float, default=LinkConfig.agent_timeout_s,
                   help="seconds an agent may send no status (nor answer keepalive pings) before it counts as "
                        "lost and its queries continue on other agents")
    add_client_arguments(p)


def config_from_args(args: argparse.Namespace, agents: str, output: Path) -> CoordinatorConfig:
    check_choices(args.scenario, args.mode)
    if args.max_samples is not None and args.max_samples < 1:
        raise ValueError(f"--max-samples must be at least 1, got {args.max_samples}")
    demo = lgsettings.DEMO if getattr(args, "demo", False) else None
    return CoordinatorConfig(
        agents=agents, output=output, scenario=args.scenario, mode=args.mode, dataset=args.dataset,
        tokenizer=args.tokenizer, user_conf=args.user_conf,
        max_samples=args.max_samples or (demo.samples if demo and args.dataset == "synthetic" else None),
        target_qps=args.target_qps, duration_s=args.duration,
        demo=demo,
        connect_timeout_s=getattr(args, "connect_timeout", 10.0), ready_timeout_s=getattr(args, "ready_timeout", 900.0),
        progress_s=args.progress,
        link=LinkConfig(agent_timeout_s=getattr(args, "agent_timeout", LinkConfig.agent_timeout_s),
                        security=client_security(args)))


def report(result: RunResult) -> int:
    """Print the outcome; exit status 0 when every query was answered cleanly."""
    print()
    for line in result.summary.lines():
        print(line)
    for line in result.accuracy_lines:
        print(line)
    s = result.snapshot
    shares = ", ".join(f"{a.address} {a.queries_done}" for a in s.agents)
    print(f"Queries per agent: {shares}" + (f"; {s.redispatched} re-dispatched" if s.redispatched else ""))
    for a in s.agents:
        if a.losses:
            print(f"Agent {a.address} lost {a.losses} time(s), {a.redispatched} queries re-dispatched; "
                  f"last: {a.last_error}")
    print(f"LoadGen logs: {result.output.resolve()}")
    if result.duplicates:
        print(f"ERROR: {result.duplicates} duplicate answers were refused (a coordinator bug)")
    if result.error or s.failed:
        print(f"ERROR: {s.failed} queries failed: {result.error or 'see the log above'}")
    return 0 if result.ok else 1


def run(args: argparse.Namespace) -> int:
    if args.output is None:
        raise ValueError("--output DIR is required (the folder for LoadGen's logs)")
    cfg = config_from_args(args, args.agents, args.output)
    try:
        result = run_session(cfg)
    except BaseException as exc:
        leave_if_loadgen_running(exc, "coordinator")
        raise
    return report(result)
