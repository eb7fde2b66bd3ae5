"""results.json: a run's figures for scripts, beside report.md and from the same data (docs/results.md
is its schema; SCHEMA_VERSION changes whenever a field changes meaning or goes, not when one is added).
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

from llmbench.common import host_info
from llmbench.coordinator.observe.metrics import AgentCounters, RunMetrics
from llmbench.coordinator.report import figures
from llmbench.coordinator.report.loadgen_log import read_loadgen_log
from llmbench.coordinator.run.outputs import RESULTS_FILE
from llmbench.coordinator.run.session import RunResult, precision
from llmbench.coordinator.run.written import write_text

SCHEMA = "llmbench.results"
SCHEMA_VERSION = 1


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _agent(a: AgentCounters, queries: int, tokens: int, loadgen_s: float) -> dict[str, object]:
    st = a.status
    model = st.model if st else None
    return {
        "address": a.address, "node": st.node_name if st else None, "device": model.device if model else None,
        "model": model.name if model else None, "engine": model.engine if model else None,
        "precision": {"dtype": model.dtype, "quantization": model.quantization or "none",
                      "weight_scales": model.weight_scales or None, "activation_scales": model.activation_scales or None,
                      "kv_cache_dtype": model.kv_cache_dtype or None, "kv_scales": model.kv_scales or None,
                      "summary": precision(model)} if model else None,
        "queries": a.queries_done, "queries_share": _share(a.queries_done, queries),
        "output_tokens": a.output_tokens, "output_tokens_share": _share(a.output_tokens, tokens),
        "output_tokens_per_s": _share(a.output_tokens, loadgen_s),
        "busy_s": a.busy_s, "busy_share": min(a.busy_s / loadgen_s, 1.0) if loadgen_s > 0 else None,
        "kv_used_mean": a.kv_used,
        "kv_tokens_total": st.kv_blocks_total * st.kv_block_size if st else None,
        "memory_kind": st.memory_kind or None if st else None,
        "memory_total_bytes": st.memory_total_bytes if st else None,
        "redispatched": a.redispatched, "lost": a.losses,
    }


def build(result: RunResult, metrics: RunMetrics, folder: Path, clock: dict[str, float],
          outcome: str) -> dict[str, object]:
    """The document; LoadGen's fields come from its detail log in `folder` (where the run's logs are),
    `clock` and `outcome` are what report.md states."""
    bench, sm, s, ds = result.settings, result.summary, result.snapshot, result.dataset
    lg = read_loadgen_log(folder)
    loadgen_s = result.timings_s.get("loadgen", 0.0)
    queries, tokens = sum(a.queries_done for a in s.agents), sum(a.output_tokens for a in s.agents)
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": {
            "benchmark": bench.benchmark.name, "scenario": bench.scenario, "loadgen_scenario": sm.scenario,
            "checker_scenario": bench.spec.checker, "mode": bench.mode, "outcome": outcome,
            "mlperf_settings": not bench.changes, "settings_changes": list(bench.changes),
            "dataset": {"name": ds.name, "samples": len(ds), "max_new_tokens": ds.max_new_tokens,
                        "synthetic": ds.references is None},
        },
        "settings": {"requested": figures.described(bench.describe()), "effective": lg.effective},
        "loadgen": {
            "version": lg.version, "result": sm.result or None, "samples_per_s": sm.samples_per_s,
            "tokens_per_s": sm.tokens_per_s, "target_qps": sm.target_qps if sm.arrives_at_rate else None,
            "ttft_p99_ms": sm.ttft_p99_ms, "tpot_p99_ms": sm.tpot_p99_ms,
            "ttft_limit_ms": sm.ttft_limit_ms, "tpot_limit_ms": sm.tpot_limit_ms,
            "latency_percentile": sm.latency_percentile, "latency_ms": sm.latency_ms,
            "problems": list(sm.problems), "fields": lg.results, "early_stopping": lg.early_stopping,
        },
        "latency_ms": {"percentiles": list(figures.PERCENTILES),
                       "ttft": figures.distribution_ms(metrics.ttft), "tpot": figures.distribution_ms(metrics.tpot),
                       "itl": figures.distribution_ms(metrics.itl), "e2e": figures.distribution_ms(metrics.e2e)},
        "throughput": {
            "samples_per_s": figures.measured_rate(result), "output_tokens_per_s": _share(s.output_tokens, loadgen_s),
            "completed": s.completed, "failed": s.failed, "redispatched": s.redispatched,
            "output_tokens": s.output_tokens, "loadgen_s": loadgen_s,
        },
        "agents": [_agent(a, queries, tokens, loadgen_s) for a in s.agents],
        "accuracy": {"passed": result.accuracy_passed, "lines": list(result.accuracy_lines)},
        "compliance": {"passed": result.compliance_passed, "lines": list(result.compliance_lines)},
        "system": host_info.describe(),  # the coordinator's host; agents' devices are theirs
        "wall_clock_s": clock,
    }


def write_results(result: RunResult, metrics: RunMetrics, folder: Path, clock: dict[str, float],
                  outcome: str) -> Path:
    text = json.dumps(build(result, metrics, folder, clock, outcome), indent=1, allow_nan=False)
    return write_text(folder / RESULTS_FILE, text + "\n")


def read_results(folder: Path, use: str) -> dict:
    """A run folder's results.json, checked to be one of a schema version this llmbench reads; ValueError
    naming the folder otherwise (`use`: what the caller does with it, for the hint to a newer llmbench)."""
    path = folder / RESULTS_FILE
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    if not path.is_file():
        raise ValueError(f"{folder} has no {RESULTS_FILE}: not an llmbench run folder, or a run that did not "
                         "finish (or ran before llmbench wrote it)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not an llmbench results file (no \"schema\": \"{SCHEMA}\")")
    version = doc.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise ValueError(f"{path} has schema version {version!r}; this llmbench reads 1 to {SCHEMA_VERSION}: "
                         f"{use} it with a newer llmbench")
    return doc
