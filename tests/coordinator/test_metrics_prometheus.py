"""Prometheus text exposition: the format, and agents' and the coordinator's /metrics scraped over
HTTP while a real run (simulated agents, real LoadGen) is going."""
from __future__ import annotations

import argparse
import asyncio
import threading
import time
import urllib.error
import urllib.request

import pytest

from llmbench.common.prometheus import Family, MetricsServer, render
from prometheus_text import METRICS_LINE, parse, scrape, value
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
        coordinator.append(scrape(coordinator_url))
        agent_scrapes.append([scrape(url) for url in agent_urls])
        run.join(30)
    finally:
        exporter.stop()
        run_local.stop_agents(agents)

    types, first = coordinator[0]
    _, second = coordinator[1]
    assert types["llmbench_coordinator_samples_completed_total"] == "counter"
    assert types["llmbench_coordinator_ttft_seconds"] == "summary"
    assert types["llmbench_coordinator_queued_queries"] == "gauge"
    assert all(name.endswith("_total") for name, kind in types.items() if kind == "counter")
    done = [value(s, "llmbench_coordinator_samples_completed_total") for s in (first, second)]
    assert 20 <= done[0] < done[1]
    assert value(first, "llmbench_coordinator_output_tokens_total") < value(second, "llmbench_coordinator_output_tokens_total")
    assert value(second, "llmbench_coordinator_ttft_seconds_count") >= done[1] - 5  # answered ones have a TTFT
    assert 0 < value(second, "llmbench_coordinator_ttft_seconds", quantile="0.99") < 2.0
    assert value(second, "llmbench_coordinator_ttft_limit_seconds") == 2.0
    assert value(second, "llmbench_coordinator_phase", phase="loadgen", scenario="Server") == 1
    per_agent = [value(second, "llmbench_coordinator_agent_samples_completed_total", agent=a.address) for a in agents]
    assert min(per_agent) > 0 and sum(per_agent) == done[1]
    assert all(value(second, "llmbench_coordinator_agent_ready", agent=a.address) == 1 for a in agents)

    for before, after, agent in zip(agent_scrapes[0], agent_scrapes[1], agents):
        types, s0 = before
        _, s1 = after
        assert all(name.startswith("llmbench_agent_") for name in types)
        assert types["llmbench_agent_output_tokens_total"] == "counter"
        assert types["llmbench_agent_kv_free_tokens"] == "gauge"
        assert value(s0, "llmbench_agent_output_tokens_total") < value(s1, "llmbench_agent_output_tokens_total")
        assert value(s1, "llmbench_agent_ready", agent=agent.address) == 1
        assert value(s1, "llmbench_agent_kv_free_tokens") <= value(s1, "llmbench_agent_kv_blocks") * value(
            s1, "llmbench_agent_kv_block_size_tokens")
        assert value(s1, "llmbench_agent_memory_total_bytes", memory="host") > 0
        assert value(s1, "llmbench_agent_info", engine="simulated") == 1
