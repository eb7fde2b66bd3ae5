"""LoadGen settings from mlperf.conf + user.conf + overrides, and the synthetic dataset's shape."""
from __future__ import annotations

import re

import mlperf_loadgen as lg
import numpy as np
import pytest

from llmbench.coordinator.loadgen import benchmarks, early_stopping, scenarios, settings
from llmbench.coordinator.data.synthetic import make_synthetic

EDGE = benchmarks.LLAMA3_1_8B_EDGE.name


def test_mlperf_conf_for_llama3_1_8b_server():
    s = settings.build("Server", "performance", sample_count=13368)
    t = s.test
    assert t.use_token_latencies  # from mlperf.conf, so TTFT/TPOT are what LoadGen judges
    assert t.ttft_latency == 2_000_000_000 and t.tpot_latency == 100_000_000
    assert t.min_duration_ms == 600_000 and t.performance_sample_count_override == 13368
    assert t.sample_concatenate_permutation
    assert s.changes == []  # nothing differs from MLPerf's settings


def test_offline_and_small_dataset_are_reported_as_changes():
    s = settings.build("Offline", "performance", sample_count=40, min_query_count=40, duration_s=5)
    assert s.test.min_query_count == 40 and s.test.performance_sample_count_override == 40
    text = "\n".join(s.changes)
    assert "min_query_count: 40 (mlperf.conf: 13368)" in text
    assert "min_duration (ms): 5000 (mlperf.conf: 600000) - --duration" in text
    assert s.expected_queries(40) == 40  # one permutation covers 1 QPS x 5 s x 1.1


def test_demo_scale_is_listed_with_reasons_and_allows_early_stopping():
    s = settings.build("Server", "performance", sample_count=settings.DEMO.samples, demo=settings.DEMO)
    assert s.test.server_target_qps == 7
    assert all(" - demo" in line or "dataset" in line for line in s.changes)
    assert any(line.startswith("target_qps: 7 (mlperf.conf: 1)") for line in s.changes)
    assert s.expected_queries(settings.DEMO.samples) >= early_stopping.SERVER_QUERIES + 100


def test_a_measured_demo_rate_replaces_the_tables_and_runs_long_enough_for_early_stopping():
    measured = settings.DemoScale(target_qps=2.5, rate_why="demo: 0.4 of the 6.25 samples/s measured")
    s = settings.build("Server", "performance", sample_count=100, demo=measured)
    assert s.test.server_target_qps == 2.5 and s.test.min_duration_ms == 240_000  # 600 queries at 2.5 QPS
    assert "target_qps: 2.5 (mlperf.conf: 1) - demo: 0.4 of the 6.25 samples/s measured" in s.changes
    assert s.expected_queries(100) >= early_stopping.SERVER_QUERIES + 100
    fast = settings.build("Interactive", "performance", sample_count=100, demo=settings.DemoScale(target_qps=40.0))
    assert fast.test.min_duration_ms == 80_000  # the table's duration stands where the rate runs 600 in it
    offline = settings.build("Offline", "performance", sample_count=100, demo=measured)
    assert offline.test.offline_expected_qps == 50  # Offline keeps its table row: it has no latency limits


def test_early_stopping_needs_what_loadgen_says():
    """459 queries at p99 with none over (Server); SingleStream's p90 estimate needs one query over it: LoadGen
    logs "Processed at least 64 queries", and for its p99 estimate "would need to process at least 662"."""
    assert early_stopping.SERVER_QUERIES == early_stopping.queries_needed(0.99) == 459  # 0.99 ** 459 < 0.01
    assert early_stopping.SINGLE_STREAM_QUERIES == early_stopping.queries_needed(0.9, overs=1) == 64
    assert early_stopping.queries_needed(0.99, overs=1) == 662


def mlperf_conf(model: str, scenario: str) -> lg.TestSettings:
    t = lg.TestSettings()
    t.scenario = getattr(lg.TestScenario, scenario)
    t.FromConfig("", model, scenario, 0)
    return t


LOADGEN_SETTINGS = ("min_duration_ms", "min_query_count", "max_duration_ms", "max_query_count", "offline_expected_qps",
                    "single_stream_expected_latency_ns", "performance_sample_count_override", "use_token_latencies",
                    "sample_concatenate_permutation", "ttft_latency", "tpot_latency")


@pytest.mark.parametrize("scenario, min_query_count", [("SingleStream", 100), ("Offline", 5000)])
def test_mlperf_conf_for_llama3_1_8b_edge(scenario, min_query_count):
    s = settings.build(scenario, "performance", sample_count=5000, benchmark=EDGE)
    assert s.model == "llama3_1-8b-edge" and s.benchmark is benchmarks.LLAMA3_1_8B_EDGE and s.changes == []
    assert s.test.scenario == getattr(lg.TestScenario, scenario)
    conf = mlperf_conf("llama3_1-8b-edge", scenario)
    assert {a: getattr(s.test, a) for a in LOADGEN_SETTINGS} == {a: getattr(conf, a) for a in LOADGEN_SETTINGS}
    assert s.performance_sample_count == benchmarks.LLAMA3_1_8B_EDGE.samples == 5000  # the checker's
    assert s.test.min_query_count == min_query_count and s.test.use_token_latencies
    assert s.test.min_duration_ms == 600_000


def test_single_stream_query_count_is_what_loadgen_plans(tmp_path):
    """max(min_query_count, 2 x min_duration / expected latency), plus the rest of a pass over the samples."""
    mlperf = settings.build("SingleStream", "performance", sample_count=5000, benchmark=EDGE)
    assert mlperf.expected_queries(5000) == 120_000 + 5000  # 2 x 600 s / 10 ms, already whole passes: one more
    conf = tmp_path / "user.conf"  # NVIDIA's Jetson Thor submission's; its LoadGen log: 10,000 queries
    conf.write_text("*.SingleStream.target_latency = 4200\n*.SingleStream.min_query_count = 5000\n")
    submitted = settings.build("SingleStream", "performance", sample_count=5000, benchmark=EDGE, user_conf=str(conf))
    assert submitted.expected_queries(5000) == 10_000
    assert any(line.startswith("expected_latency (ns): 4200000000 (mlperf.conf: 10000000) - from") for line in
               submitted.changes)
    short = settings.build("SingleStream", "performance", sample_count=37, benchmark=EDGE, duration_s=0.1)
    assert short.expected_queries(37) == 111  # max(100, 20), plus 11 to three passes over 37 (LoadGen: 111)


def test_single_stream_demo_is_listed_with_reasons():
    s = settings.build("SingleStream", "performance", sample_count=settings.DEMO.samples, benchmark=EDGE,
                       demo=settings.DEMO)
    assert s.test.single_stream_expected_latency_ns == 250_000_000 and s.test.min_duration_ms == 10_000
    assert all(" - demo" in line or "dataset" in line for line in s.changes) and len(s.changes) == 3
    assert s.expected_queries(settings.DEMO.samples) == 200 >= early_stopping.SINGLE_STREAM_QUERIES
    assert "ttft_latency" not in "\n".join(s.describe())  # SingleStream has no TTFT/TPOT limits to show


def test_user_conf_applies_over_mlperf_conf(tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("llama3_1-8b.Server.target_qps = 3.5\n*.Server.min_duration = 7000\n")
    s = settings.build("Server", "performance", sample_count=100, user_conf=str(conf))
    assert s.test.server_target_qps == 3.5 and s.test.min_duration_ms == 7000
    assert any(f"from {conf}" in line for line in s.changes)
    assert s.expected_queries(100) == 100  # 3.5 x 7 = 24.5 -> min_query_count 100 -> one permutation


def test_a_user_conf_line_loadgen_would_not_read_is_refused_with_its_line(tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("# NVIDIA-style header\n"
                    "*.Server.target_qpz = 3\n"  # a typo LoadGen would ignore, running at target_qps 1
                    "llama3_1-8b.Server.target_qps = 5  # fine\n"
                    "*.Offline.target_qps = 9\n"  # another scenario's: not this run's, left alone
                    "other_model.Server.no_such_key = 1\n"  # another model's, likewise
                    "*.Server.min_duration = ten\n"
                    "*.Srv.target_qps = 1\n"
                    "target_qps 4\n")
    with pytest.raises(ValueError) as err:
        settings.build("Server", "performance", sample_count=100, user_conf=str(conf))
    message = str(err.value)
    assert message.startswith(f"user.conf {conf}: line 2: LoadGen does not take 'target_qpz' from a user.conf for "
                              f"llama3_1-8b Server")
    assert "line 6: the value of *.Server.min_duration must be a number, got 'ten'" in message
    assert "line 7: 'Srv' in *.Srv.target_qps is not a LoadGen scenario" in message
    assert "line 8: expected 'model.scenario.key = number'" in message
    assert not any(f"line {n}:" in message for n in (1, 3, 4, 5))
    # The same keys LoadGen does read, for an Interactive run (its own mlperf.conf model): accepted.
    conf.write_text("llama3_1-8b-interactive.Server.target_qps = 5\n*.*.ttft_latency = 400\n*.Server.coalesce_queries = 1\n")
    s = settings.build("Interactive", "performance", sample_count=100, user_conf=str(conf))
    assert s.test.server_target_qps == 5 and s.test.ttft_latency == 400_000_000


@pytest.mark.parametrize("benchmark, scenario, message", [
    ("llama3.1-8b", "SingleStream", "--scenario SingleStream needs --benchmark llama3.1-8b-edge (llama3.1-8b runs "
                                    "Server, Offline, Interactive)"),
    (EDGE, "Server", "--scenario Server needs --benchmark llama3.1-8b (llama3.1-8b-edge runs SingleStream, Offline)"),
    (EDGE, "Interactive", "--scenario Interactive needs --benchmark llama3.1-8b"),
    (EDGE, "MultiStream", "unknown scenario 'MultiStream'"),
    ("llama3.1-70b", "Offline", "unknown benchmark 'llama3.1-70b'"),
])
def test_a_scenario_outside_its_benchmark_is_refused(benchmark, scenario, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        settings.build(scenario, "performance", sample_count=10, benchmark=benchmark)


def test_single_stream_has_no_target_rate():
    with pytest.raises(ValueError, match="^--target-qps: SingleStream has no target rate, .* goes in --user-conf"):
        settings.build("SingleStream", "performance", sample_count=10, benchmark=EDGE, target_qps=2)
    assert benchmarks.LLAMA3_1_8B_EDGE.scenario(None) is scenarios.SINGLE_STREAM  # without --scenario: its first
    assert benchmarks.LLAMA3_1_8B.scenario(None) is scenarios.SERVER


def test_bad_settings_input():
    with pytest.raises(ValueError, match="unknown mode"):
        settings.build("Server", "fast", sample_count=10)
    with pytest.raises(FileNotFoundError, match="user.conf /nonexistent.conf"):
        settings.build("Server", "performance", sample_count=10, user_conf="/nonexistent.conf")
    with pytest.raises(ValueError, match="--target-qps must be positive"):
        settings.build("Server", "performance", sample_count=10, target_qps=0)


def test_synthetic_matches_cnn_dm_prompt_lengths():
    ds = make_synthetic(13368, 128256, seed=0)
    lengths = np.array([len(p) for p in ds.prompts])
    assert 800 <= lengths.mean() <= 880 and 730 <= np.median(lengths) <= 800
    assert 1450 <= np.percentile(lengths, 95) <= 1750
    assert lengths.min() >= 141 and lengths.max() <= 2540
    assert all(p[0] == 128000 and p.dtype == np.int32 for p in ds.prompts[:50])
    assert max(int(p[1:].max()) for p in ds.prompts[:200]) < 128000  # no special tokens inside
    assert ds.references is None


def test_synthetic_is_deterministic_and_prefix_stable():
    a = make_synthetic(30, 1000, seed=3)
    b = make_synthetic(10, 1000, seed=3)
    c = make_synthetic(10, 1000, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.prompts[:10], b.prompts))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(b.prompts, c.prompts))
    assert all(p[0] == 1 and 3 <= p[1:].min() and p.max() < 1000 for p in a.prompts)  # small vocab: BOS 1
    short = make_synthetic(50, 1000, max_len=300)
    assert max(len(p) for p in short.prompts) == 300
    with pytest.raises(ValueError, match="vocab_size"):
        make_synthetic(5, 2)


def test_user_conf_and_flags_win_over_the_demo_scale(tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("*.Server.target_qps = 2\n")
    s = settings.build("Server", "performance", sample_count=100, user_conf=str(conf), duration_s=9,
                       demo=settings.DEMO)
    assert s.test.server_target_qps == 2 and s.test.min_duration_ms == 9000
    assert any(line.startswith("target_qps: 2 (mlperf.conf: 1) - from") for line in s.changes)


def test_interactive_is_server_with_the_interactive_limits():
    s = settings.build("Interactive", "performance", sample_count=13368)
    assert s.spec.loadgen == "Server" and s.model == "llama3_1-8b-interactive"
    assert s.test.ttft_latency == 500_000_000 and s.test.tpot_latency == 30_000_000 and s.changes == []
