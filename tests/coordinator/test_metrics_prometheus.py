"""Prometheus text exposition: the format, and agents' and the coordinator's /metrics scraped over
HTTP while a real run (simulated agents, real LoadGen) is going."""
from __future__ import annotations

import argparse
import asyncio
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest

from llmbench.agent.server.screening import MAX_STOP_IDS
from llmbench.common.histogram import Histogram, add_histogram
from llmbench.common.process_metrics import process_families
from llmbench.common.prometheus import Family, MetricsServer, render
from llmbench.proto import pb, rpc
from prometheus_text import METRICS_LINE, histogram, parse, scrape, value
from llmbench.coordinator.observe import prometheus as coordinator_prometheus
from llmbench.coordinator.commands import run_local
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run.session import CoordinatorConfig, run_benchmark

def test_render_follows_the_text_format():
    families = [
        Family("x_requests_total", "counter", "requests\nseen").add(3, path='/a"b\\c'),
        Family("x_free_bytes", "gauge", "free memory").add(1.5e9).add(-4, kind="host"),
        Family("x_latency_seconds", "summary", "latency").add(0.25, quantile="0.5").add(1.0, "_sum").add(4, "_count"),
    ]
    text = render(families)
    assert text.splitlines() == [
        "# HELP x_requests_total requests\\nseen", "# TYPE x_requests_total counter",
        'x_requests_total{path="/a\\"b\\\\c"} 3',
        "# HELP x_free_bytes free memory", "# TYPE x_free_bytes gauge", "x_free_bytes 1500000000",
        'x_free_bytes{kind="host"} -4',
        "# HELP x_latency_seconds latency", "# TYPE x_latency_seconds summary",
        'x_latency_seconds{quantile="0.5"} 0.25', "x_latency_seconds_sum 1", "x_latency_seconds_count 4"]
    types, samples = parse(text)
    assert types == {"x_requests_total": "counter", "x_free_bytes": "gauge", "x_latency_seconds": "summary"}
    assert samples[("x_requests_total", frozenset({("path", '/a\\"b\\\\c')}))] == 3
    with pytest.raises(ValueError, match="unknown kind 'histo'"):
        render([Family("x", "histo", "?")])


def test_a_histogram_renders_cumulative_buckets_its_sum_and_count():
    h = Histogram((0.1, 0.5, 1.0))
    for v in (0.05, 0.1, 0.3, 0.7, 4.0):  # a value on a bound counts in that bucket (le: less or equal)
        h.observe(v)
    text = render([add_histogram(Family("x_wait_seconds", "histogram", "wait"), h.snapshot(), kind="a")])
    assert text.splitlines()[2:] == [
        'x_wait_seconds_bucket{kind="a",le="0.1"} 2', 'x_wait_seconds_bucket{kind="a",le="0.5"} 3',
        'x_wait_seconds_bucket{kind="a",le="1.0"} 4', 'x_wait_seconds_bucket{kind="a",le="+Inf"} 5',
        'x_wait_seconds_sum{kind="a"} 5.15', 'x_wait_seconds_count{kind="a"} 5']
    types, samples = parse(text)
    assert types == {"x_wait_seconds": "histogram"}
    assert histogram(samples, "x_wait_seconds", kind="a") == ([(0.1, 2), (0.5, 3), (1.0, 4), (float("inf"), 5)],
                                                              5.15, 5)
    with pytest.raises(ValueError, match="must increase"):
        Histogram((0.5, 0.1))


def test_process_metrics_have_the_standard_names_and_plausible_values():
    types, samples = parse(render(process_families()))
    assert types["process_cpu_seconds_total"] == "counter"
    assert value(samples, "process_resident_memory_bytes") > 1 << 20  # a Python process: megabytes at least
    assert value(samples, "process_open_fds") >= 3 and value(samples, "process_threads") >= 1
    assert 0 < time.time() - value(samples, "process_start_time_seconds") < 24 * 3600


def test_server_answers_metrics_and_404_and_a_busy_port_is_a_clear_error():
    server = MetricsServer(lambda: [Family("x_up", "gauge", "up").add(1)])
    port = server.start()
    try:
        _, samples = scrape(f"http://127.0.0.1:{port}/metrics")
        assert samples == {("x_up", frozenset()): 1.0}
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            MetricsServer(lambda: [], "127.0.0.1", port).start()
    finally:
        server.stop()


@pytest.mark.slow
def test_agent_and_coordinator_metrics_move_during_a_real_run(tmp_path):
    args = argparse.Namespace(agents=2, engine="simulated", model="tiny", tokens_per_s=4000,
                              agent_args="--metrics-port 0")
    (tmp_path / "agents").mkdir()
    agents = run_local.start_agents(args, tmp_path / "agents")
    metrics = RunMetrics()
    exporter = coordinator_prometheus.exporter(metrics, "127.0.0.1", 0)
    coordinator_url = f"http://127.0.0.1:{exporter.start()}/metrics"
    cfg = CoordinatorConfig(agents=",".join(a.address for a in agents), output=tmp_path / "out", scenario="Server",
                            max_samples=40, target_qps=40, duration_s=3, progress_s=0)
    run = threading.Thread(target=lambda: asyncio.run(run_benchmark(cfg, metrics, say=lambda line: None)))
    try:
        deadline = time.monotonic() + 20
        agent_urls = []
        while len(agent_urls) < 2 and time.monotonic() < deadline:  # the agents log their metrics address
            agent_urls = [m.group(1) for a in agents if (m := METRICS_LINE.search(a.log_path.read_text()))]
            time.sleep(0.05)
        run.start()
        while metrics.completed < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        coordinator = [scrape(coordinator_url)]
        agent_scrapes = [[scrape(url) for url in agent_urls]]
        time.sleep(1.0)
        with grpc.insecure_channel(agents[0].address) as channel:  # a query the agent refuses: an error counted
            with pytest.raises(grpc.RpcError, match="stop token ids"):
                list(rpc.AgentStub(channel).Generate(pb.GenerateRequest(
                    tokens=pb.TokenList(ids=[1, 2, 3]), stop_token_ids=[7] * (MAX_STOP_IDS + 1))))
        coordinator.append(scrape(coordinator_url))
        agent_scrapes.append([scrape(url) for url in agent_urls])
        run.join(30)
    finally:
        exporter.stop()
        run_local.stop_agents(agents)

    types, first = coordinator[0]
    _, second = coordinator[1]
    assert types["llmbench_coordinator_samples_completed_total"] == "counter"
    assert types["llmbench_coordinator_queued_queries"] == "gauge"
    assert "summary" not in types.values()
    assert all(name.endswith("_total") for name, kind in types.items() if kind == "counter")
    assert all(name.endswith("_seconds") for name, kind in types.items() if kind == "histogram")
    done = [value(s, "llmbench_coordinator_samples_completed_total") for s in (first, second)]
    assert 20 <= done[0] < done[1]
    assert value(first, "llmbench_coordinator_output_tokens_total") < value(second, "llmbench_coordinator_output_tokens_total")
    for name in ("ttft_seconds", "tpot_seconds", "e2e_latency_seconds", "queue_wait_seconds"):
        assert types["llmbench_coordinator_" + name] == "histogram"
        histogram(first, "llmbench_coordinator_" + name)  # well formed in every scrape
    buckets, ttft_sum, ttft_count = histogram(second, "llmbench_coordinator_ttft_seconds")
    assert ttft_count >= done[1] - 5 and 0 < ttft_sum / ttft_count < 2.0  # answered ones have a TTFT, in limits
    assert dict(buckets)[2.0] >= 0.99 * ttft_count  # Server's p99 limit, read off the buckets
    _, e2e_sum, _ = histogram(second, "llmbench_coordinator_e2e_latency_seconds")
    assert e2e_sum > ttft_sum
    _, wait_sum, waits = histogram(second, "llmbench_coordinator_queue_wait_seconds")
    assert waits >= done[1] and 0 <= wait_sum / waits < 2.0  # every answered query was sent once at least
    assert value(second, "process_resident_memory_bytes") > 0 and types["process_cpu_seconds_total"] == "counter"
    assert value(second, "llmbench_coordinator_ttft_limit_seconds") == 2.0
    assert value(second, "llmbench_coordinator_phase", phase="loadgen", scenario="Server") == 1
    per_agent = [value(second, "llmbench_coordinator_agent_samples_completed_total", agent=a.address) for a in agents]
    assert min(per_agent) > 0 and sum(per_agent) == done[1]
    assert all(value(second, "llmbench_coordinator_agent_ready", agent=a.address) == 1 for a in agents)

    for before, after, agent in zip(agent_scrapes[0], agent_scrapes[1], agents):
        types, s0 = before
        _, s1 = after
        assert all(name.startswith(("llmbench_agent_", "process_")) for name in types)
        assert types["llmbench_agent_output_tokens_total"] == "counter"
        assert types["llmbench_agent_kv_free_tokens"] == "gauge"
        assert value(s0, "llmbench_agent_output_tokens_total") < value(s1, "llmbench_agent_output_tokens_total")
        assert value(s1, "llmbench_agent_ready", agent=agent.address) == 1
        assert value(s1, "llmbench_agent_kv_free_tokens") <= value(s1, "llmbench_agent_kv_blocks") * value(
            s1, "llmbench_agent_kv_block_size_tokens")
        assert value(s1, "llmbench_agent_memory_total_bytes", memory="host") > 0
        assert value(s1, "llmbench_agent_info", engine="simulated") == 1
        assert types["llmbench_agent_step_seconds"] == "histogram"  # the simulated engine costs no steps: empty
        assert histogram(s1, "llmbench_agent_step_seconds", kind="decode")[2] == 0
        assert value(s1, "process_open_fds") > 0 and value(s1, "process_cpu_seconds_total") > 0
        refused = 1 if agent is agents[0] else 0
        assert value(s0, "llmbench_agent_query_errors_total", code="invalid_query") == 0
        assert value(s1, "llmbench_agent_query_errors_total", code="invalid_query") == refused
        assert value(s1, "llmbench_agent_query_errors_total", code="too_long") == 0
