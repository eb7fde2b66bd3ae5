"""The coordinator's Prometheus metrics (`--metrics-port`), read from RunMetrics at each scrape.

Latencies are histograms (cumulative buckets, so several coordinators' or runs' series add up and
rates can be windowed); names carry their unit (`_seconds`, `_tokens`) and counters end in `_total`.
The process's own metrics (CPU, memory, file descriptors) come with them, unprefixed, as usual.
"""
from __future__ import annotations

from llmbench.common.histogram import Histogram, add_histogram
from llmbench.common.process_metrics import process_families
from llmbench.common.prometheus import Family, MetricsServer
from llmbench.coordinator.observe.metrics import RunMetrics

PREFIX = "llmbench_coordinator_"


def _histogram(name: str, help_text: str, h: Histogram) -> Family:
    return add_histogram(Family(PREFIX + name, "histogram", help_text), h.snapshot())


def collect(metrics: RunMetrics) -> list[Family]:
    s = metrics.snapshot()
    run = dict(scenario=metrics.scenario, mode=metrics.mode)
    families = [
        Family(PREFIX + "phase", "gauge", "1 for the phase the run is in").add(1, phase=metrics.phase, **run),
        Family(PREFIX + "expected_samples", "gauge", "queries LoadGen is expected to issue (estimate)").add(s.expected),
        Family(PREFIX + "samples_issued_total", "counter", "queries LoadGen issued").add(s.issued),
        Family(PREFIX + "samples_completed_total", "counter", "queries answered (failed ones included)").add(s.completed),
        Family(PREFIX + "samples_failed_total", "counter", "queries answered without a whole output").add(s.failed),
        Family(PREFIX + "samples_redispatched_total", "counter",
               "queries moved to another agent after theirs was lost").add(s.redispatched),
        Family(PREFIX + "output_tokens_total", "counter", "output tokens received from agents").add(s.output_tokens),
        Family(PREFIX + "queued_queries", "gauge", "queries waiting for an agent with room").add(s.queued),
        Family(PREFIX + "inflight_queries", "gauge", "queries sent to agents and not finished").add(s.inflight),
        _histogram("ttft_seconds", "time from LoadGen's issue to the first token", metrics.ttft_histogram),
        _histogram("tpot_seconds", "time per output token after the first, per query", metrics.tpot_histogram),
        _histogram("e2e_latency_seconds", "time from LoadGen's issue to the last token", metrics.e2e_histogram),
        _histogram("queue_wait_seconds", "time from LoadGen's issue to the query's first send to an agent",
                   metrics.queue_wait_histogram),
        Family(PREFIX + "ttft_limit_seconds", "gauge", "the scenario's p99 TTFT limit (0: none)").add(metrics.ttft_limit_s),
        Family(PREFIX + "tpot_limit_seconds", "gauge", "the scenario's p99 TPOT limit (0: none)").add(metrics.tpot_limit_s),
    ]
    ready = Family(PREFIX + "agent_ready", "gauge", "1 while the agent is ready to take queries")
    done = Family(PREFIX + "agent_samples_completed_total", "counter", "queries the agent answered")
    failed = Family(PREFIX + "agent_samples_failed_total", "counter",
                    "queries whose last attempt was at the agent and that ended without a whole output")
    tokens = Family(PREFIX + "agent_output_tokens_total", "counter", "output tokens the agent returned")
    inflight = Family(PREFIX + "agent_inflight_queries", "gauge", "queries in flight at the agent")
    lost = Family(PREFIX + "agent_losses_total", "counter", "times the agent was lost")
    kv = Family(PREFIX + "agent_kv_free_tokens", "gauge", "the dispatcher's estimate of the agent's free KV tokens")
    for a in s.agents:
        ready.add(1 if a.state == "ready" else 0, agent=a.address)
        done.add(a.queries_done, agent=a.address)
        failed.add(a.failed, agent=a.address)
        tokens.add(a.output_tokens, agent=a.address)
        inflight.add(a.inflight, agent=a.address)
        lost.add(a.losses, agent=a.address)
        if a.status is not None:
            kv.add(a.est_free_tokens, agent=a.address)
    return families + [ready, done, failed, tokens, inflight, lost, kv] + process_families()


def exporter(metrics: RunMetrics, host: str, port: int) -> MetricsServer:
    return MetricsServer(lambda: collect(metrics), host, port)
