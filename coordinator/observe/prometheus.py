"""The coordinator's Prometheus metrics (`--metrics-port`), read from RunMetrics at each scrape."""
from __future__ import annotations

from llmbench.common.prometheus import Family, MetricsServer
from llmbench.coordinator.observe.metrics import Percentiles, RunMetrics

PREFIX = "llmbench_coordinator_"


def _summary(name: str, help_text: str, p: Percentiles) -> Family:
    f = Family(PREFIX + name, "summary", help_text)
    for q, value in (("0.5", p.p50), ("0.9", p.p90), ("0.99", p.p99)):
        f.add(value, quantile=q)
    return f.add(p.mean * p.count, "_sum").add(p.count, "_count")


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
        _summary("ttft_seconds", "time from issue to first token", s.ttft_s),
        _summary("tpot_seconds", "time per output token after the first", s.tpot_s),
        Family(PREFIX + "ttft_limit_seconds", "gauge", "the scenario's p99 TTFT limit (0: none)").add(metrics.ttft_limit_s),
        Family(PREFIX + "tpot_limit_seconds", "gauge", "the scenario's p99 TPOT limit (0: none)").add(metrics.tpot_limit_s),
    ]
    ready = Family(PREFIX + "agent_ready", "gauge", "1 while the agent is ready to take queries")
    done = Family(PREFIX + "agent_samples_completed_total", "counter", "queries the agent answered")
    tokens = Family(PREFIX + "agent_output_tokens_total", "counter", "output tokens the agent returned")
    inflight = Family(PREFIX + "agent_inflight_queries", "gauge", "queries in flight at the agent")
    lost = Family(PREFIX + "agent_losses_total", "counter", "times the agent was lost")
    kv = Family(PREFIX + "agent_kv_free_tokens", "gauge", "the dispatcher's estimate of the agent's free KV tokens")
    for a in s.agents:
        ready.add(1 if a.state == "ready" else 0, agent=a.address)
        done.add(a.queries_done, agent=a.address)
        tokens.add(a.output_tokens, agent=a.address)
        inflight.add(a.inflight, agent=a.address)
        lost.add(a.losses, agent=a.address)
        if a.status is not None:
            kv.add(a.est_free_tokens, agent=a.address)
    return families + [ready, done, tokens, inflight, lost, kv]


def exporter(metrics: RunMetrics, host: str, port: int) -> MetricsServer:
    return MetricsServer(lambda: collect(metrics), host, port)
