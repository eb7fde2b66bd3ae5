"""PNG charts with matplotlib (Agg, no pyplot): a run's throughput over time, TTFT/TPOT distributions and
per-agent load; runs side by side (`llmbench compare`).

Each chart has a `draw_*` function that builds the figure and returns it with the series it plotted
(name -> values), so the report (and the tests) know what the picture shows without reading pixels,
and a function that draws and saves it. Legends sit beside the plot, never on the data.
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
    with writing(path):
        fig.savefig(path, dpi=DPI, format="png")


def _laid_out(fig: Figure) -> Figure:
    FigureCanvasAgg(fig)
    fig.tight_layout()  # counts the legends beside the axes in
    return fig


def _legend_beside(ax) -> None:
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def whole_bins(points: list[ThroughputSample]) -> list[ThroughputSample]:
    """The series with its last interval merged into the one before when it is under half as long: the
    test ends at any moment, and a rate over the few completions of a sliver of an interval is a spike
    no agent made. The merged point's rates are over both intervals, so rate x time still sums to the totals."""
    if len(points) < 2:
        return points
    start = points[-3].elapsed_s if len(points) > 2 else 0.0
    *rest, before, last = points
    full, part = before.elapsed_s - start, last.elapsed_s - before.elapsed_s
    if part >= full / 2:
        return points

    def rate(a: float, b: float) -> float:
        return (a * full + b * part) / (full + part)
    return [*rest, ThroughputSample(last.elapsed_s, rate(before.tokens_per_s, last.tokens_per_s),
                                    rate(before.samples_per_s, last.samples_per_s))]


def draw_throughput(points: list[ThroughputSample], target_qps: float | None = None) -> tuple[Figure, Series]:
    """Output tokens/s and samples/s over the LoadGen test, one point per recorded interval (whole_bins),
    with the target arrival rate where queries arrive at one (Server, Interactive)."""
    points = whole_bins(points)
    series = {"elapsed_s": [p.elapsed_s for p in points], "tokens_per_s": [p.tokens_per_s for p in points],
              "samples_per_s": [p.samples_per_s for p in points], "target_qps": [target_qps] if target_qps else []}
    fig = Figure(figsize=(10, 5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(series["elapsed_s"], series["tokens_per_s"], color="tab:blue", label="output tokens/s")
    bottom.plot(series["elapsed_s"], series["samples_per_s"], color="tab:green", label="samples/s")
    if target_qps:
        bottom.axhline(target_qps, color="red", linestyle="--", label=f"target {target_qps:g} QPS")
    top.set_ylabel("tokens/s")
    bottom.set_ylabel("samples/s")
    bottom.set_xlabel("seconds since the LoadGen test started")
    top.set_title("Throughput over time")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        _legend_beside(ax)
        ax.set_ylim(bottom=0)
    return _laid_out(fig), series


def throughput(points: list[ThroughputSample], path: Path, target_qps: float | None = None) -> Series:
    fig, series = draw_throughput(points, target_qps)
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
    if values_ms or limit_ms:  # under the axes: beside them it would squeeze the other histogram
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)


def draw_latency(ttft_s: list[float], tpot_s: list[float], ttft_limit_s: float,
                 tpot_limit_s: float) -> tuple[Figure, Series]:
    """Histograms of TTFT and TPOT (as the coordinator measured them) with the p99 and the scenario's limit."""
    series = {"ttft_ms": [v * 1000 for v in ttft_s], "tpot_ms": [v * 1000 for v in tpot_s],
              "limits_ms": [ttft_limit_s * 1000, tpot_limit_s * 1000]}
    fig = Figure(figsize=(10, 4.5))
    left, right = fig.subplots(1, 2)
    _histogram(left, series["ttft_ms"], series["limits_ms"][0], "Time to first token", "tab:blue")
    _histogram(right, series["tpot_ms"], series["limits_ms"][1], "Time per output token", "tab:orange")
    return _laid_out(fig), series


def latency(ttft_s: list[float], tpot_s: list[float], ttft_limit_s: float, tpot_limit_s: float,
            path: Path) -> Series:
    fig, series = draw_latency(ttft_s, tpot_s, ttft_limit_s, tpot_limit_s)
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
    _save(_laid_out(fig), path)
    return series


def draw_comparison(runs: list[str], ratios: dict[str, list[float | None]]) -> tuple[Figure, Series]:
    """Each metric's ratio to the first run (`ratios`: metric -> one per run, the first 1.0), one bar per
    later run beside a line at 1; a run without the figure has no bar."""
    names = list(ratios)
    later = runs[1:]
    fig = Figure(figsize=(10, 1.5 + 0.3 * max(len(names), 1) * max(len(later), 1)))
    ax = fig.subplots()
    height = 0.8 / max(len(later), 1)
    for i, run in enumerate(later):
        values = [ratios[name][i + 1] for name in names]
        positions = [y + i * height for y in range(len(names))]
        ax.barh([p for p, v in zip(positions, values) if v is not None], [v for v in values if v is not None],
                height=height, label=run)
    ax.axvline(1.0, color="black", linewidth=1, label=f"{runs[0]} (= 1)")
    ax.set_yticks([y + 0.4 - height / 2 for y in range(len(names))], names)
    ax.invert_yaxis()
    ax.set_xlabel(f"ratio to {runs[0]}")
    ax.set_title("Runs compared")
    ax.grid(axis="x", alpha=0.3)
    _legend_beside(ax)
    series = {name: [v if v is not None else float("nan") for v in values] for name, values in ratios.items()}
    return _laid_out(fig), series


def comparison(runs: list[str], ratios: dict[str, list[float | None]], path: Path) -> Series:
    fig, series = draw_comparison(runs, ratios)
    _save(fig, path)
    return series
