"""Run counters the progress line and the TUI read: tokens/s, samples/s, TTFT/TPOT, per-agent share.

Writers are the dispatcher and the SUT on the coordinator's asyncio loop, once per message (never per
token); readers (progress printer, TUI) call `snapshot()` from any thread at their own rate, e.g.

    metrics = RunMetrics()
    result = await run_benchmark(cfg, metrics)      # session.py; meanwhile, elsewhere:
    s = metrics.snapshot()                          # Snapshot: totals, rates, percentiles, agents
    s.completed, s.expected, s.eta_s, s.tokens_per_s, s.ttft_s.p99, [a.status for a in s.agents]

It also keeps what a watcher needs beyond the counters: the run's phase and limits, a throughput
history (`sample()` about once a second; bounded: past SERIES_MAX_POINTS every other point goes and
the cadence doubles), the run's log lines, and the wall-clock per phase of the whole job.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from llmbench.common.histogram import LATENCY_BOUNDS_S, TOKEN_BOUNDS_S, Histogram
from llmbench.proto import pb

RATE_WINDOW_S = 5.0
SERIES_EVERY_S = 1.0
SERIES_MAX_POINTS = 1200  # even: halving keeps the newest point
LOG_MAX_LINES = 2000


@dataclass
class AgentCounters:
    address: str
    state: str = "connecting"  # connecting | ready | draining | lost | removed
    queries_sent: int = 0
    queries_done: int = 0
    output_tokens: int = 0
    inflight: int = 0
    redispatched: int = 0  # queries moved away from this agent after it was lost
    losses: int = 0
    failed: int = 0  # queries whose last attempt was here and that ended without a whole output
    last_error: str = ""
    est_free_tokens: int = 0  # the dispatcher's capacity estimate at the last decision
    status: pb.AgentStatus | None = None  # the agent's last report
    busy_s: float = 0.0  # time with queries in flight since the test started (in a Snapshot: up to it)
    busy_since: float | None = None  # when the current stretch with queries in flight began
    kv_used_sum: float = 0.0  # sum over status reports since the test started of the share of KV in use
    kv_reports: int = 0

    @property
    def kv_used(self) -> float | None:
        """Mean share of the agent's KV cache in use, over its reports since the test started."""
        return self.kv_used_sum / self.kv_reports if self.kv_reports else None


@dataclass(frozen=True)
class Percentiles:
    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float = 0.0

    @staticmethod
    def of(values: list[float]) -> "Percentiles":
        if not values:
            return Percentiles(0, 0.0, 0.0, 0.0, 0.0)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return Percentiles(len(values), float(p50), float(p90), float(p99), float(max(values)),
                           float(np.mean(values)))


@dataclass(frozen=True)
class ThroughputSample:
    elapsed_s: float  # since the LoadGen test started
    tokens_per_s: float  # over the interval since the previous sample
    samples_per_s: float


@dataclass(frozen=True)
class Snapshot:
    elapsed_s: float
    expected: int  # queries LoadGen is expected to issue (estimate; 0 if unknown)
    issued: int
    completed: int
    failed: int  # answered without a full output (agent error); the run is not clean
    queued: int  # waiting in the coordinator for an agent with room
    inflight: int  # sent to agents and not finished
    redispatched: int
    output_tokens: int
    tokens_per_s: float  # over the last few seconds
    samples_per_s: float
    ttft_s: Percentiles  # measured by the coordinator from issue to first token
    tpot_s: Percentiles  # (completion - first token) / (tokens - 1)
    agents: tuple[AgentCounters, ...]  # copies; status is the last pb.AgentStatus

    @property
    def eta_s(self) -> float | None:
        if not self.expected or self.samples_per_s <= 0:
            return None
        return max(self.expected - self.completed, 0) / self.samples_per_s


@dataclass
class RunMetrics:
    expected: int = 0
    started_at: float = field(default_factory=time.monotonic)
    issued: int = 0
    completed: int = 0
    failed: int = 0
    queued: int = 0
    redispatched: int = 0
    output_tokens: int = 0
    agents: dict[str, AgentCounters] = field(default_factory=dict)
    ttft: list[float] = field(default_factory=list)
    tpot: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)  # issue to last token, per query
    # Every gap between a query's token messages (mesh/agent_slot.py appends them on the loop, unlocked:
    # read once the test is over). An array of doubles: a 600 s run has millions.
    itl: array = field(default_factory=lambda: array("d"))
    # The same latencies bucketed for Prometheus (observe/prometheus.py), and each query's wait in the
    # dispatcher's queue from LoadGen's issue to its first send to an agent (record_queue_wait).
    ttft_histogram: Histogram = field(default_factory=lambda: Histogram(LATENCY_BOUNDS_S))
    tpot_histogram: Histogram = field(default_factory=lambda: Histogram(TOKEN_BOUNDS_S))
    e2e_histogram: Histogram = field(default_factory=lambda: Histogram(LATENCY_BOUNDS_S))
    queue_wait_histogram: Histogram = field(default_factory=lambda: Histogram(LATENCY_BOUNDS_S))
    # What the run is (set by the session) and how it ended (set by whoever ends it).
    run_id: str = field(default_factory=lambda: f"{os.getpid()}-{time.time():.3f}")
    scenario: str = ""
    mode: str = ""
    output_dir: str = ""
    phase: str = "starting"  # agents | dataset | loadgen | accuracy | report | done | failed | aborted
    ttft_limit_s: float = 0.0  # the scenario's p99 limits; 0: none (Offline)
    tpot_limit_s: float = 0.0
    finished: bool = False
    stopped_in: str = ""  # the phase the run was in when finish() was called
    outcome: str = ""
    job_started_at: float = field(default_factory=time.monotonic)  # the whole job, agents' start included
    timings_s: dict[str, float] = field(default_factory=dict)  # wall-clock per phase
    _history: deque = field(default_factory=deque)  # (t, completed, output_tokens)
    _points: list = field(default_factory=list)  # (t, completed, output_tokens) every _every_s
    _every_s: float = SERIES_EVERY_S
    _log: deque = field(default_factory=lambda: deque(maxlen=LOG_MAX_LINES))
    _log_count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def mark_started(self) -> None:
        """The measured part begins (LoadGen starts): elapsed time and rates count from here."""
        with self._lock:
            self.started_at = time.monotonic()
            self._history.clear()
            self._history.append((self.started_at, self.completed, self.output_tokens))
            self._points = [(self.started_at, self.completed, self.output_tokens)]
            self._every_s = SERIES_EVERY_S
            for a in self.agents.values():
                a.busy_s, a.kv_used_sum, a.kv_reports = 0.0, 0.0, 0
                a.busy_since = self.started_at if a.inflight else None

    def agent(self, address: str) -> AgentCounters:
        with self._lock:
            if address not in self.agents:
                self.agents[address] = AgentCounters(address)
            return self.agents[address]

    def record_issued(self, n: int) -> None:
        with self._lock:
            self.issued += n

    def record_inflight(self, counters: AgentCounters, n: int) -> None:
        """The agent has n queries in flight now; keeps its busy time."""
        with self._lock:
            counters.inflight = n
            if n and counters.busy_since is None:
                counters.busy_since = time.monotonic()
            elif not n and counters.busy_since is not None:
                counters.busy_s += time.monotonic() - counters.busy_since
                counters.busy_since = None

    def record_status(self, counters: AgentCounters, status: pb.AgentStatus) -> None:
        with self._lock:
            counters.status = status
            if status.kv_blocks_total:
                counters.kv_used_sum += 1 - status.kv_blocks_free / status.kv_blocks_total
                counters.kv_reports += 1

    def record_tokens(self, counters: AgentCounters, n: int) -> None:
        with self._lock:
            self.output_tokens += n
            counters.output_tokens += n

    def record_completed(self, counters: AgentCounters | None, ttft_s: float | None, tpot_s: float | None,
                         ok: bool = True, e2e_s: float | None = None) -> None:
        with self._lock:
            self.completed += 1
            if counters is not None:
                counters.queries_done += 1
                counters.failed += not ok
            if not ok:
                self.failed += 1
            if ttft_s is not None:
                self.ttft.append(ttft_s)
                self.ttft_histogram.observe(ttft_s)
            if tpot_s is not None:
                self.tpot.append(tpot_s)
                self.tpot_histogram.observe(tpot_s)
            if e2e_s is not None:
                self.e2e.append(e2e_s)
                self.e2e_histogram.observe(e2e_s)

    def record_queue_wait(self, seconds: float) -> None:
        self.queue_wait_histogram.observe(seconds)  # a lock of its own: never waits on a snapshot

    def record_redispatched(self, counters: AgentCounters, n: int) -> None:
        with self._lock:
            self.redispatched += n
            counters.redispatched += n

    def sample(self, force: bool = False) -> None:
        """Record a throughput point if one is due (call it about every SERIES_EVERY_S), or now if
        forced (the end of the test: the history covers all of it)."""
        now = time.monotonic()
        with self._lock:
            last = self._points[-1][0] if self._points else None
            if last is not None and (now <= last or not force and now - last < self._every_s - 0.1 * SERIES_EVERY_S):
                return
            self._points.append((now, self.completed, self.output_tokens))
            if len(self._points) > SERIES_MAX_POINTS:
                del self._points[1::2]
                self._every_s *= 2

    def throughput(self) -> list[ThroughputSample]:
        with self._lock:
            points, start = list(self._points), self.started_at
        return [ThroughputSample(t1 - start, (k1 - k0) / (t1 - t0), (c1 - c0) / (t1 - t0))
                for (t0, c0, k0), (t1, c1, k1) in zip(points, points[1:]) if t1 > t0]

    def add_log(self, line: str) -> None:
        with self._lock:
            self._log.append(line)
            self._log_count += 1

    def log_since(self, seen: int) -> tuple[int, list[str]]:
        """(number of the first line returned, the lines after the first `seen` that are still kept)."""
        with self._lock:
            first_kept = self._log_count - len(self._log) + 1
            start = max(seen + 1, first_kept)
            return start, list(self._log)[start - first_kept:]

    def echo(self, say: Callable[[str], None]) -> Callable[[str], None]:
        """`say` that also keeps each line in the run's log (the TUI's log pane, the status stream)."""
        def both(line: str) -> None:
            self.add_log(line)
            say(line)
        return both

    def finish(self, phase: str, outcome: str) -> None:
        """The run is over: phase done, failed or aborted, and one line saying how."""
        with self._lock:
            self.stopped_in = self.phase
            self.phase, self.outcome, self.finished = phase, outcome, True

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        with self._lock:
            self._history.append((now, self.completed, self.output_tokens))
            while len(self._history) > 2 and now - self._history[1][0] >= RATE_WINDOW_S:
                self._history.popleft()
            t0, done0, tok0 = self._history[0]
            span = now - t0
            agents = tuple(replace(a, busy_s=a.busy_s + (now - a.busy_since if a.busy_since is not None else 0.0))
                           for a in self.agents.values())
            inflight = sum(a.inflight for a in agents)
            ttft, tpot = list(self.ttft), list(self.tpot)
            counts = dict(
                elapsed_s=now - self.started_at, expected=self.expected, issued=self.issued,
                completed=self.completed, failed=self.failed, queued=self.queued, inflight=inflight,
                redispatched=self.redispatched, output_tokens=self.output_tokens,
                tokens_per_s=(self.output_tokens - tok0) / span if span > 0 else 0.0,
                samples_per_s=(self.completed - done0) / span if span > 0 else 0.0)
        # Percentiles outside the lock: the dispatcher never waits on a reader's arithmetic.
        return Snapshot(**counts, ttft_s=Percentiles.of(ttft), tpot_s=Percentiles.of(tpot), agents=agents)


async def record_throughput(metrics: RunMetrics) -> None:
    """Sample the throughput history until cancelled (a task beside the LoadGen test)."""
    while True:
        await asyncio.sleep(SERIES_EVERY_S)
        metrics.sample()


class LogToMetrics(logging.Handler):
    """Log records into the run's log, where the TUI and the status stream show them."""

    def __init__(self, metrics: RunMetrics, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        self.metrics.add_log(f"{record.levelname.lower()}: {record.getMessage()}")
