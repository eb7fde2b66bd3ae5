"""PNG charts of a run with matplotlib (Agg, no pyplot): throughput over time, TTFT/TPOT distributions,
per-agent load.

Each function draws one figure, saves it, and returns the series it plotted (name -> values), so the
report (and the tests) know what the picture shows without reading pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from llmbench.coordinator.observe.metrics import AgentCounters, ThroughputSample
from llmbench.coordinator.run.written import writing

Series = dict[str, list[float]]
DPI = 100


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    with writing(path):
        fig.savefig(path, dpi=DPI, format="png")


def throughput(points: list[ThroughputSample], path: Path) -> Series:
    """Output tokens/s and samples/s over the LoadGen test, one point per recorded interval."""
    series = {"elapsed_s": [p.elapsed_s for p in points], "tokens_per_s": [p.tokens_per_s for p in points],
              "samples_per_s": [p.samples_per_s for p in points]}
    fig = Figure(figsize=(9, 5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(series["elapsed_s"], series["tokens_per_s"], color="tab:blue", label="output tokens/s")
    bottom.plot(series["elapsed_s"], series["samples_per_s"], color="tab:green", label="samples/s")
    top.set_ylabel("tokens/s")
    bottom.set_ylabel("samples/s")
    bottom.set_xlabel("seconds since the LoadGen test started")
    top.set_title("Throughput over time")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        ax.set_ylim(bottom=0)
    _save(fig, path)
    return series


def _histogram(ax, values_ms: list[float], limit_ms: float, title: str, color: str) -> None:
    right = max(values_ms, default=0.0) * 1.05
    if values_ms:
        ax.hist(values_ms, bins=min(50, max(5, len(values_ms) // 10)), color=color, alpha=0.8)
        p99 = float(np.percentile(values_ms, 99))
        ax.axvline(p99, color="black", linestyle="--", label=f"p99 {p99:.1f} ms")
    else:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    if limit_ms and limit_ms <= 2 * right:
        ax.axvline(limit_ms, color="red", label=f"p99 limit {limit_ms:g} ms")
        right = max(right, limit_ms * 1.05)
    elif limit_ms:  # far beyond the data: drawing it would squash the histogram into one bar
        ax.plot([], [], color="red", label=f"p99 limit {limit_ms:g} ms (far right, off the chart)")
    if right > 0:
        ax.set_xlim(0, right)
    ax.set_title(title)
    ax.set_xlabel("ms")
    ax.set_ylabel("queries")
    if values_ms or limit_ms:
        ax.legend(loc="upper right")


def latency(ttft_s: list[float], tpot_s: list[float], ttft_limit_s: float, tpot_limit_s: float,
            path: Path) -> Series:
    """Histograms of TTFT and TPOT (as the coordinator measured them) with the p99 and the scenario's limit."""
    series = {"ttft_ms": [v * 1000 for v in ttft_s], "tpot_ms": [v * 1000 for v in tpot_s],
              "limits_ms": [ttft_limit_s * 1000, tpot_limit_s * 1000]}
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    _histogram(left, series["ttft_ms"], series["limits_ms"][0], "Time to first token", "tab:blue")
    _histogram(right, series["tpot_ms"], series["limits_ms"][1], "Time per output token", "tab:orange")
    _save(fig, path)
    return series


def agent_load(agents: list[AgentCounters], path: Path) -> Series:
    """Queries answered and output tokens returned per agent."""
    series = {"queries": [float(a.queries_done) for a in agents],
              "output_tokens": [float(a.output_tokens) for a in agents]}
    names = [a.address for a in agents]
    fig = Figure(figsize=(9, 1.5 + 0.5 * max(len(agents), 1)))
    left, right = fig.subplots(1, 2, sharey=True)
    left.barh(names, series["queries"], color="tab:green")
    right.barh(names, series["output_tokens"], color="tab:blue")
    left.set_xlabel("queries answered")
    right.set_xlabel("output tokens")
    left.invert_yaxis()
    fig.suptitle("Work per agent")
    _save(fig, path)
    return series
