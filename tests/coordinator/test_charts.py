"""The charts' drawing rules: the last partial interval, the target rate line, legends beside the data."""
from __future__ import annotations

import pytest

from llmbench.coordinator.observe.metrics import ThroughputSample
from llmbench.coordinator.report import charts


def test_a_short_last_interval_is_merged_into_the_one_before_keeping_the_totals():
    # 1 s intervals at 10 samples/s, then the test ends 0.1 s later with 3 completions: 30/s on its own.
    points = [ThroughputSample(1.0, 100, 10), ThroughputSample(2.0, 100, 10), ThroughputSample(2.1, 300, 30)]
    merged = charts.whole_bins(points)
    assert [p.elapsed_s for p in merged] == [1.0, 2.1]
    assert merged[-1].samples_per_s == pytest.approx((10 * 1.0 + 30 * 0.1) / 1.1)
    steps = [1.0, 1.1]
    assert sum(p.samples_per_s * dt for p, dt in zip(merged, steps)) == pytest.approx(23)
    assert sum(p.tokens_per_s * dt for p, dt in zip(merged, steps)) == pytest.approx(230)
    whole = points[:2] + [ThroughputSample(2.6, 50, 5)]  # half an interval or more stands as it is
    assert charts.whole_bins(whole) == whole
    assert charts.whole_bins(points[:1]) == points[:1]


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _legends_off_the_data(fig) -> int:
    renderer = fig.canvas.get_renderer()
    drawn = 0
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        drawn += 1
        box = legend.get_window_extent(renderer)
        for other in fig.axes:
            assert not _overlaps(box, other.get_window_extent(renderer)), (ax.get_title(), other.get_title())
    return drawn


def test_throughput_has_the_target_rate_line_and_legends_beside_the_plots():
    points = [ThroughputSample(float(t), 900 + 10 * t, 7 + (t % 3)) for t in range(1, 30)]
    fig, series = charts.draw_throughput(points, target_qps=7.0)
    assert series["target_qps"] == [7.0]
    bottom = fig.axes[1]
    assert any(list(line.get_ydata()) == [7.0, 7.0] for line in bottom.get_lines())
    assert "target 7 QPS" in [t.get_text() for t in bottom.get_legend().get_texts()]
    assert _legends_off_the_data(fig) == 2
    fig, series = charts.draw_throughput(points)  # Offline: no rate to draw
    assert series["target_qps"] == [] and len(fig.axes[1].get_lines()) == 1


def test_latency_legends_are_under_the_histograms():
    ttft = [0.01 * (1 + i % 17) for i in range(400)]
    tpot = [0.001 * (1 + i % 5) for i in range(400)]
    fig, series = charts.draw_latency(ttft, tpot, 2.0, 0.1)
    assert len(series["ttft_ms"]) == 400
    assert _legends_off_the_data(fig) == 2


def test_comparison_draws_later_runs_ratios_beside_the_baseline():
    ratios = {"samples/s": [1.0, 1.5, 0.5], "TTFT p99 (ms)": [1.0, None, 2.0]}
    fig, series = charts.draw_comparison(["a", "b", "c"], ratios)
    ax = fig.axes[0]
    widths = sorted(round(p.get_width(), 6) for p in ax.patches)
    assert widths == [0.5, 1.5, 2.0]  # b has no TTFT: no bar
    assert [t.get_text() for t in ax.get_yticklabels()] == ["samples/s", "TTFT p99 (ms)"]
    assert _legends_off_the_data(fig) == 1
    assert series["samples/s"] == [1.0, 1.5, 0.5]
