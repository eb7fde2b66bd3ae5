"""RunMetrics' history for the TUI and the report: fixed cadence, bounded memory, numbered log lines;
StatusFeed hands each reader only what it has not had."""
from __future__ import annotations

import pytest

from llmbench.coordinator.observe import metrics as metrics_module
from llmbench.coordinator.observe.metrics import (LOG_MAX_LINES, SERIES_EVERY_S, SERIES_MAX_POINTS, Percentiles,
                                          RunMetrics)
from llmbench.coordinator.observe.status_service import StatusFeed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(metrics_module, "time", c)
    return c


def test_throughput_points_follow_the_counters_at_a_fixed_cadence(clock):
    m = RunMetrics()
    m.mark_started()
    for second in range(1, 11):
        clock.now += SERIES_EVERY_S
        m.completed += 3 if second <= 5 else 1
        m.output_tokens += 384 if second <= 5 else 128
        m.sample()
        m.sample()  # not due yet: no second point for the same instant
    points = m.throughput()
    assert [p.elapsed_s for p in points] == [float(s) for s in range(1, 11)]
    assert [p.samples_per_s for p in points] == [3.0] * 5 + [1.0] * 5
    assert [p.tokens_per_s for p in points] == [384.0] * 5 + [128.0] * 5


def test_a_long_run_keeps_a_bounded_history_over_its_whole_length(clock):
    m = RunMetrics()
    m.mark_started()
    seconds = 5 * SERIES_MAX_POINTS
    for _ in range(seconds):
        clock.now += SERIES_EVERY_S
        m.completed += 2
        m.output_tokens += 256
        m.sample()
    points = m.throughput()
    assert SERIES_MAX_POINTS // 2 <= len(points) <= SERIES_MAX_POINTS
    assert points[-1].elapsed_s == seconds and points[0].elapsed_s <= 8  # still from the start to the end
    assert all(p.samples_per_s == 2.0 and p.tokens_per_s == 256.0 for p in points)  # rates over wider steps


def test_log_lines_are_numbered_and_the_oldest_go_first(clock):
    m = RunMetrics()
    for i in range(1, LOG_MAX_LINES + 11):
        m.add_log(f"line {i}")
    assert m.log_since(LOG_MAX_LINES + 5) == (LOG_MAX_LINES + 6, [f"line {i}" for i in range(LOG_MAX_LINES + 6,
                                                                                              LOG_MAX_LINES + 11)])
    first, lines = m.log_since(0)  # a reader from the start gets what is still kept
    assert first == 11 and lines[0] == "line 11" and len(lines) == LOG_MAX_LINES
    said = []
    say = m.echo(said.append)
    say("dataset synthetic: 40 samples")
    assert said == ["dataset synthetic: 40 samples"] and m.log_since(LOG_MAX_LINES + 10)[1] == said


def test_status_feed_sends_each_point_and_line_once_and_the_end(clock):
    m = RunMetrics(scenario="Server", mode="performance", ttft_limit_s=2.0, tpot_limit_s=0.1)
    feed = StatusFeed(m)
    m.mark_started()
    m.add_log("LoadGen settings: ...")
    for _ in range(3):
        clock.now += 1
        m.completed += 1
        m.sample()
    m.ttft += [0.1, 0.2, 0.3]
    first = feed.next()
    assert [p.elapsed_s for p in first.throughput] == [1.0, 2.0, 3.0]
    assert (first.log_seq, list(first.log_lines)) == (1, ["LoadGen settings: ..."])
    assert first.ttft.count == 3 and first.ttft.limit_s == 2.0 and first.tpot.limit_s == 0.1
    assert first.eta_s == -1.0 and not first.finished  # nothing expected: no ETA
    clock.now += 1
    m.sample()
    second = feed.next()
    assert [p.elapsed_s for p in second.throughput] == [4.0] and list(second.log_lines) == []
    m.finish("done", "VALID (Server): 1 samples/s")
    last = feed.next()
    assert last.finished and last.phase == "done" and last.outcome == "VALID (Server): 1 samples/s"
    assert StatusFeed(m).next().throughput.__len__() == 4  # a new reader gets everything


def test_percentiles_carry_the_mean():
    p = Percentiles.of([0.1, 0.2, 0.3, 0.4])
    assert p.count == 4 and p.mean == pytest.approx(0.25) and p.max == 0.4
    assert Percentiles.of([]).mean == 0.0
