"""report.md and its PNG charts at the end of every run, written beside LoadGen's logs before the run's
files are moved into the output folder together (staging.py).

What users show others after a run: the settings (and which differ from MLPerf's), LoadGen's
summary, each agent's share, the accuracy table, how long the benchmark's full dataset would take
at the measured rate, and where the job's wall-clock time went (agents, dataset, LoadGen, accuracy)
beside LoadGen's own throughput.
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from llmbench.coordinator.report import charts, figures
from llmbench.coordinator.report.results import write_results
from llmbench.coordinator.loadgen import scenarios
from llmbench.coordinator.run.exits import BEFORE_LOADGEN, doing_after_loadgen, loadgen_logs, phase_reached
from llmbench.coordinator.observe.metrics import Percentiles, RunMetrics
from llmbench.coordinator.run.outputs import CHART_FILES, REPORT_FILE, REPORT_HEADER
from llmbench.coordinator.run.session import CoordinatorConfig, RunResult, precision
from llmbench.coordinator.run.staging import unfinished
from llmbench.coordinator.run.written import write_text
from llmbench.coordinator.loadgen.summary import read_summary

log = logging.getLogger("llmbench.coordinator")
PHASES = {  # timings_s keys (session.py, run_local.py) -> what the time was spent on
    "agent processes": "start the local agent processes",
    "agents ready": "agents connected, model loaded and warmed up",
    "dataset": "dataset preparation",
    "loadgen": "the LoadGen test",
    "accuracy": "accuracy evaluation (ROUGE)",
    figures.OTHER: "other (settings, connections, summary, charts)",
}
# Why a compliance run's LoadGen verdict (INVALID, most often) is not its outcome.
AUDITED = ("LoadGen's performance verdict does not apply: it ran under TEST06's audit settings, 100 queries "
           "and no minimum duration")
FEW_SAMPLES = 1000  # answered samples under which a projection from their rate is flagged as rough
_CHANGE = re.compile(r"^(?P<label>.+?): (?P<value>.+?) \(mlperf\.conf: (?P<base>.*?)\) - (?P<why>.*)$")


def outcome(result: RunResult) -> str:
    """One line for the TUI, the status stream and the log."""
    s, summary = result.snapshot, result.summary
    if result.duplicates:
        return f"{result.duplicates} duplicate answers were refused (a coordinator bug)"
    if result.error or s.failed:
        return f"{s.failed} of {s.completed} queries failed: {result.error or 'see the log'}"
    if not summary.result:
        return f"accuracy run: {s.completed} samples answered" + (f"; {result.accuracy_lines[-1]}"
                                                                  if result.accuracy_lines else "")
    ran = f"{result.settings.benchmark.name} {result.settings.scenario}"
    if result.compliance_passed is not None:  # LoadGen's verdict under the audit settings is no result
        return f"TEST06 {'PASS' if result.compliance_passed else 'FAIL'} ({ran}; {AUDITED})"
    if summary.latency_ms is not None:  # SingleStream's result
        return (f"{summary.result} ({ran}): {summary.latency_percentile:g}th percentile latency "
                f"{summary.latency_ms:.1f} ms")
    rate = f"{summary.samples_per_s:g} samples/s" if summary.samples_per_s is not None else "no rate"
    return f"{summary.result} ({ran}): {rate}, {summary.tokens_per_s or 0:g} tokens/s"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h} h {rest // 60:02d} min" if h else f"{rest // 60} min {rest % 60:02d} s"


def _ms(value_s: float) -> str:
    return f"{value_s * 1000:.1f}"


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""]


def settings_section(result: RunResult) -> list[str]:
    bench, ds = result.settings, result.dataset
    head = bench.describe()[0]
    changes = {m["label"]: m for m in map(_CHANGE.match, bench.changes) if m}
    table = []
    for label, value in figures.described(bench.describe()).items():
        change = changes.get(label)
        table.append([label, value, change["base"] if change else value, change["why"] if change else ""])
    name, checker = bench.benchmark.name, bench.spec.checker
    lines = ["## Settings", "", head, "",
             f"MLPerf's submission checker names this benchmark {name}, scenario {checker} "
             f"(results/<system>/{name}/{checker}/).", "",
             f"Dataset: {ds.name}, {len(ds):,} samples, up to {ds.max_new_tokens} new tokens.",
             *[f"- {note}" for note in ds.notes], ""]
    lines += _table(["setting", "this run", "MLPerf (mlperf.conf)", "why it differs"], table)
    if bench.changes:
        lines += [f"**{len(bench.changes)} settings differ from MLPerf's: this run is not a compliant submission.**", ""]
    return lines


def _latency_row(name: str, p: Percentiles, limit_s: float) -> list[object]:
    verdict = ("-" if not limit_s or not p.count else "within" if p.p99 <= limit_s else "**over**")
    return [name, p.count, _ms(p.p50), _ms(p.p90), _ms(p.p99), _ms(p.max), _ms(limit_s) if limit_s else "-", verdict]


def summary_section(result: RunResult, metrics: RunMetrics) -> list[str]:
    sm, s = result.summary, result.snapshot
    lines = ["## LoadGen summary", "", f"From `{sm.path.name}`:", ""]
    if sm.result:
        rows = [["result", f"**{sm.result}**"],
                ["benchmark / scenario / mode", f"{result.settings.benchmark.name} / {sm.scenario} / {sm.mode}"]]
        if sm.latency_ms is not None:
            rows.append([f"{sm.latency_percentile:g}th percentile latency (ms)", f"{sm.latency_ms:.1f}"])
        if sm.samples_per_s is not None:
            rows.append(["samples per second", f"{sm.samples_per_s:g}"])
        if sm.tokens_per_s is not None:
            rows.append(["tokens per second", f"{sm.tokens_per_s:g}"])
        if sm.target_qps and sm.arrives_at_rate:
            rows.append(["target QPS", f"{sm.target_qps:g}"])
        if sm.ttft_p99_ms is not None:
            rows.append(["TTFT p99 (ms)", f"{sm.ttft_p99_ms:.1f}" + (f" (limit {sm.ttft_limit_ms:g})" if sm.ttft_limit_ms else "")])
        if sm.tpot_p99_ms is not None:
            rows.append(["TPOT p99 (ms)", f"{sm.tpot_p99_ms:.2f}" + (f" (limit {sm.tpot_limit_ms:g})" if sm.tpot_limit_ms else "")])
        lines += _table(["", "value"], rows)
        lines += [f"- {p.lstrip('* ')}" for p in sm.problems] + ([""] if sm.problems else [])
    else:
        lines += ["LoadGen ran in accuracy mode: no performance result.", ""]
    lines += ["Latencies measured by the coordinator (issue to first token; time per output token after it), ms:", ""]
    lines += _table(["", "queries", "p50", "p90", "p99", "max", "p99 limit", "p99 vs limit"],
                    [_latency_row("TTFT", s.ttft_s, metrics.ttft_limit_s),
                     _latency_row("TPOT", s.tpot_s, metrics.tpot_limit_s)])
    lines.append(f"Queries: {s.completed:,} answered, {s.failed} failed, {s.redispatched} re-dispatched; "
                 f"{s.output_tokens:,} output tokens.")
    if result.error:
        lines.append(f"**Error: {result.error}**")
    return lines + [""]


def agents_section(result: RunResult) -> list[str]:
    agents = result.snapshot.agents
    queries = sum(a.queries_done for a in agents) or 1
    tokens = sum(a.output_tokens for a in agents) or 1
    rows = []
    for a in agents:
        st = a.status
        rows.append([a.address, st.node_name if st else "-", st.model.device if st else "-",
                     f"{st.model.name} ({st.model.engine})" if st else "-", precision(st.model) if st else "-",
                     f"{a.queries_done:,}",
                     f"{100 * a.queries_done / queries:.1f}%", f"{a.output_tokens:,}", f"{100 * a.output_tokens / tokens:.1f}%",
                     a.redispatched, a.losses])
    return ["## Work per agent", ""] + _table(
        ["agent", "node", "device", "model", "precision", "queries", "query share", "output tokens", "token share",
         "re-dispatched", "lost"], rows)


def failed_note(result: RunResult) -> str:
    """What failed queries do to the figures: their outputs, partial or empty, are in the accuracy log
    (LoadGen needs an answer for each; its log has no field to mark one) and in every rate."""
    s = result.snapshot
    return (f"**{s.failed} of {s.completed:,} samples failed**: their outputs in the accuracy log are partial or "
            "empty, and they count in these figures." if s.failed else "")


def accuracy_section(result: RunResult) -> list[str]:
    if not result.accuracy_lines:
        return []
    note = failed_note(result)
    return ["## Accuracy", "", *([note, ""] if note else []), "```", *result.accuracy_lines, "```", ""]


def compliance_section(result: RunResult) -> list[str]:
    if not result.compliance_lines:
        return []
    return ["## Compliance", "", "```", *result.compliance_lines, "```", ""]


def projection_caveats(result: RunResult) -> list[str]:
    """Why the measured rate may not hold over the full dataset."""
    caveats = []
    if result.snapshot.completed < FEW_SAMPLES:
        caveats.append(f"it comes from only {result.snapshot.completed:,} samples, where the ramp-up and the last "
                       "queries' tail weigh more than in a full run")
    if result.dataset.references is None:
        caveats.append("the prompts were synthetic (random token ids, lengths drawn from a fit to CNN/DailyMail's): "
                       "the real articles' prompts, and outputs that stop at EOS, give another rate")
    return caveats


def projection_section(result: RunResult) -> list[str]:
    rate = figures.measured_rate(result)
    lines = ["## Projection for the full dataset", ""]
    if rate <= 0:
        return lines + ["No samples were answered: no rate to project from.", ""]
    if result.snapshot.failed:
        return lines + [failed_note(result) + " No projection from this run.", ""]
    benchmark, arrival = result.settings.benchmark, result.settings.spec.arrival
    lines.append(f"One pass over {benchmark.name}'s full {benchmark.samples:,}-sample CNN/DailyMail set at the "
                 f"{rate:.2f} samples/s measured here, with these agents, would take "
                 f"**{_duration(benchmark.samples / rate)}** of LoadGen test (not counting the agents' start, the "
                 "dataset's loading or accuracy scoring).")
    caveats = projection_caveats(result)
    if caveats:
        lines.append("**A rough estimate:** " + "; ".join(caveats) + ".")
    if arrival == scenarios.AT_RATE:
        lines.append("(Server scenario: the rate follows the target QPS, not what the agents could do at most.)")
    elif arrival == scenarios.ONE_AT_A_TIME:
        lines.append("(SingleStream: one query at a time, so the rate is one over its latency, not what the agents "
                     "could do at most.)")
    return lines + [""]


def wall_clock_section(result: RunResult, clock: dict[str, float]) -> list[str]:
    total = clock[figures.TOTAL]
    rows = [[PHASES.get(name, name), f"{secs:.1f}", f"{100 * secs / total:.0f}%"] for name, secs in clock.items()
            if name != figures.TOTAL]
    rows.append(["**whole job**", f"**{total:.1f}**", "100%"])
    lines = ["## Wall-clock time", ""] + _table(["phase", "seconds", "share"], rows)
    done = result.snapshot.completed
    lines.append(f"LoadGen measured {figures.measured_rate(result):.2f} samples/s; over the whole job's wall clock that is "
                 f"{done / total:.2f} samples/s ({done:,} samples in {_duration(total)}).")
    return lines + [""]


def target_qps(result: RunResult) -> float | None:
    """The rate queries arrive at (Server, Interactive); None where LoadGen sends them as fast as answered."""
    bench = result.settings
    return float(getattr(bench.test, bench.spec.rate_setting)) if bench.spec.arrival == scenarios.AT_RATE else None


def charts_section(result: RunResult, metrics: RunMetrics, out: Path) -> tuple[list[str], dict[str, charts.Series]]:
    drawn = {
        "throughput": charts.throughput(metrics.throughput(), out / CHART_FILES["throughput"], target_qps(result)),
        "latency": charts.latency(list(metrics.ttft), list(metrics.tpot), metrics.ttft_limit_s, metrics.tpot_limit_s,
                                  out / CHART_FILES["latency"]),
        "agents": charts.agent_load(list(result.snapshot.agents), out / CHART_FILES["agents"]),
    }
    titles = {"throughput": "Throughput over time", "latency": "TTFT and TPOT distributions",
              "agents": "Work per agent"}
    lines = ["## Charts", ""] + [f"![{titles[k]}]({CHART_FILES[k]})" + "\n" for k in drawn]
    return lines, drawn


def write_report(result: RunResult, metrics: RunMetrics, folder: Path) -> tuple[Path, dict[str, charts.Series]]:
    """report.md, results.json (the same figures for scripts) and the charts in `folder`; returns
    report.md's path and the charted series."""
    chart_lines, drawn = charts_section(result, metrics, folder)
    clock = figures.wall_clock(result, metrics)
    bench = result.settings
    lines = [f"{REPORT_HEADER}: {bench.benchmark.name} {bench.scenario} {bench.mode}", "",
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}, output `{result.output.resolve()}`", "",
             f"**Outcome: {outcome(result)}**", ""]
    lines += settings_section(result) + summary_section(result, metrics) + agents_section(result)
    lines += accuracy_section(result) + compliance_section(result) + projection_section(result)
    lines += wall_clock_section(result, clock) + chart_lines
    write_results(result, metrics, folder, clock, outcome(result))
    return write_text(folder / REPORT_FILE, "\n".join(lines)), drawn


def finish_run(result: RunResult, metrics: RunMetrics) -> Path:
    """Write the report beside the run's other files, move them all into the output folder, and tell
    watchers (TUI, status stream) that the run is over. A report or chart that cannot be written fails
    the run (written.OutputError) with the earlier run's files left as they were: no exit status may
    stand on files that are not there."""
    metrics.phase = "report"
    with result.staging.whole_or_nothing():
        write_report(result, metrics, result.staging.folder)
        result.staging.publish()
    path = result.output / REPORT_FILE
    metrics.add_log(f"report: {path.resolve()}")
    metrics.finish("done", outcome(result))
    return path


def interrupted_outcome(cfg: CoordinatorConfig, metrics: RunMetrics, how: str) -> list[str]:
    """The outcome and what the folder's LoadGen logs are, as far as the stopped run got."""
    phase, s, folder = phase_reached(metrics), metrics.snapshot(), unfinished(cfg.output)
    if phase == "loadgen":
        return [f"**Outcome: interrupted{how} during the LoadGen test, after {s.completed:,} of {s.expected:,} "
                "samples answered; no LoadGen result.**", "",
                "LoadGen's logs in this folder are partial: the test did not finish, and they are no result."
                if loadgen_logs(folder) else "LoadGen had written no logs yet.", ""]
    try:
        result = f"LoadGen's result: **{read_summary(folder).result or 'none (accuracy mode)'}**."
    except OSError:
        result = "LoadGen's summary could not be read."
    return [f"**Outcome: interrupted{how} after the LoadGen test, while {doing_after_loadgen(phase, cfg.mode)}.**", "",
            f"LoadGen's test finished (its logs are complete). {result}", ""]


def write_interrupted(cfg: CoordinatorConfig, metrics: RunMetrics, how: str) -> Path | None:
    """A short report.md for a run stopped mid-way (Ctrl-C, SIGTERM): what is known when it stopped,
    beside the logs it has (exits.interrupted then says where they are left). None before the LoadGen
    test: the run has nothing to report, and the folder may still hold an earlier run's files, which
    stay as they were. Never raises: the interruption, not the report, is what the user has to hear about."""
    if phase_reached(metrics) in BEFORE_LOADGEN:
        return None
    try:
        s = metrics.snapshot()
        lines = [f"{REPORT_HEADER}: {cfg.benchmark} {cfg.scenario} {cfg.mode}, interrupted", "",
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}, output `{cfg.output.resolve()}`", "",
                 *interrupted_outcome(cfg, metrics, how)]
        rows = [["samples answered", f"{s.completed:,}"], ["queries failed", s.failed],
                ["queries in flight or queued when stopped", s.inflight + s.queued],
                ["output tokens", f"{s.output_tokens:,}"],
                ["seconds since the LoadGen test started", f"{s.elapsed_s:.1f}"]]
        if s.ttft_s.count:
            rows.append(["TTFT p99 so far (ms)", _ms(s.ttft_s.p99)])
        if s.tpot_s.count:
            rows.append(["TPOT p99 so far (ms)", _ms(s.tpot_s.p99)])
        lines += _table(["", "value"], rows)
        if s.agents:
            lines += ["## Work per agent", ""] + _table(
                ["agent", "queries", "output tokens", "lost"],
                [[a.address, f"{a.queries_done:,}", f"{a.output_tokens:,}", a.losses] for a in s.agents])
        return write_text(unfinished(cfg.output) / REPORT_FILE, "\n".join(lines))
    except Exception as exc:
        log.warning("no report written in %s: %s", cfg.output, exc)
        return None
