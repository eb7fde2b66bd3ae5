"""Runs side by side, from their results.json: the same metrics for each, with each run's ratio to the
first. Runs from other machines or llmbench versions compare as long as their schema version is one
this llmbench reads; what differs between them (host, device, versions) is listed with the figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from llmbench.coordinator.report import figures
from llmbench.coordinator.report.results import read_results
from llmbench.coordinator.run.outputs import RESULTS_FILE

LATENCIES = {"ttft": "TTFT", "tpot": "TPOT", "itl": "inter-token", "e2e": "end-to-end"}
DEFAULT_PERCENTILES = (50.0, 99.0)


@dataclass(frozen=True)
class Run:
    folder: Path
    doc: dict


@dataclass(frozen=True)
class Row:
    label: str
    values: list[object]  # one per run; None where a run has no such figure
    numeric: bool  # ratios to the first run apply

    def ratios(self) -> list[float | None]:
        first = self.values[0]
        if not self.numeric or not isinstance(first, (int, float)) or not first:
            return [None] * len(self.values)
        return [v / first if isinstance(v, (int, float)) else None for v in self.values]


def load_run(folder: Path) -> Run:
    """The run's results.json; ValueError naming the folder for anything that is not one this llmbench reads."""
    return Run(folder, read_results(folder, "compare"))


def _get(doc: dict, *keys: str | int) -> object:
    for key in keys:
        try:
            doc = doc[key]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


def _agents(doc: dict) -> str:
    agents = _get(doc, "agents") or []
    devices = sorted({f"{a.get('device')} {(a.get('precision') or {}).get('summary', '')}".strip() for a in agents})
    return f"{len(agents)} x " + ", ".join(devices) if agents else "none"


IDENTITY: list[tuple[str, Callable[[dict], object]]] = [
    ("benchmark / scenario", lambda d: f"{_get(d, 'run', 'benchmark')} / {_get(d, 'run', 'scenario')}"),
    ("mode", lambda d: _get(d, "run", "mode")),
    ("LoadGen result", lambda d: _get(d, "loadgen", "result")),
    ("MLPerf's settings", lambda d: "yes" if _get(d, "run", "mlperf_settings") else "no (changed)"),
    ("dataset", lambda d: _get(d, "run", "dataset", "name")),
    ("agents", _agents),
    ("host", lambda d: _get(d, "system", "hostname")),
    ("llmbench", lambda d: _get(d, "system", "packages", "llmbench")),
    ("torch", lambda d: _get(d, "system", "packages", "torch")),
    ("LoadGen", lambda d: _get(d, "loadgen", "version")),
]
FIGURES: list[tuple[str, tuple[str, ...]]] = [
    ("samples/s (LoadGen)", ("loadgen", "samples_per_s")),
    ("tokens/s (LoadGen)", ("loadgen", "tokens_per_s")),
    ("target QPS", ("loadgen", "target_qps")),
    ("queries answered", ("throughput", "completed")),
    ("queries failed", ("throughput", "failed")),
    ("output tokens/s (coordinator)", ("throughput", "output_tokens_per_s")),
]
TIMES: list[tuple[str, tuple[str, ...]]] = [
    ("LoadGen test (s)", ("wall_clock_s", "loadgen")),
    ("whole job (s)", ("wall_clock_s", figures.TOTAL)),
]


def check_percentiles(runs: list[Run], percentiles: tuple[float, ...]) -> None:
    for run in runs:
        stored = _get(run.doc, "latency_ms", "percentiles") or []
        missing = [p for p in percentiles if p not in stored]
        if missing:
            raise ValueError(f"{run.folder / RESULTS_FILE} has no p{missing[0]:g} (it holds "
                             f"{', '.join(f'p{p:g}' for p in stored)})")


def rows(runs: list[Run], percentiles: tuple[float, ...] = DEFAULT_PERCENTILES) -> list[Row]:
    """What the runs are, then their figures: rates, latencies at `percentiles` (ms), times."""
    check_percentiles(runs, percentiles)
    docs = [r.doc for r in runs]
    out = [Row(label, [get(d) for d in docs], numeric=False) for label, get in IDENTITY]
    out += [Row(label, [_get(d, *keys) for d in docs], numeric=True) for label, keys in FIGURES]
    for name, title in LATENCIES.items():
        for p in percentiles:
            key = figures.percentile_key(p)
            out.append(Row(f"{title} {key} (ms)", [_get(d, "latency_ms", name, key) for d in docs], numeric=True))
    out += [Row(label, [_get(d, *keys) for d in docs], numeric=True) for label, keys in TIMES]
    return out


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(runs: list[Run], table_rows: list[Row]) -> list[str]:
    """Plain text: one row per metric, a column per run (from the second on, with its ratio to the first)."""
    header = ["", *(str(r.folder) for r in runs)]
    body = []
    for row in table_rows:
        cells = [_cell(v) for v in row.values]
        for i, ratio in enumerate(row.ratios()[1:], start=1):
            if ratio is not None:
                cells[i] += f" ({ratio:.2f}x)" if ratio >= 0.1 else f" ({ratio:.2g}x)"  # 0.00x would say nothing
        body.append([row.label, *cells])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *body]]
