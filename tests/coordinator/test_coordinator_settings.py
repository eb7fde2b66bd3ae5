"""LoadGen settings from mlperf.conf + user.conf + overrides, and the synthetic dataset's shape."""
from __future__ import annotations

import numpy as np
import pytest

from llmbench.coordinator.loadgen import settings
from llmbench.coordinator.data.synthetic import make_synthetic


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
    assert s.test.server_target_qps == settings.DEMO.server_target_qps
    assert all(" - demo" in line or "dataset" in line for line in s.changes)
    assert any(line.startswith("target_qps: 7 (mlperf.conf: 1)") for line in s.changes)
    assert s.expected_queries(settings.DEMO.samples) >= 500  # LoadGen's p99 early stopping needs ~460


def test_user_conf_applies_over_mlperf_conf(tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("llama3_1-8b.Server.target_qps = 3.5\n*.Server.min_duration = 7000\n")
    s = settings.build("Server", "performance", sample_count=100, user_conf=str(conf))
    assert s.test.server_target_qps == 3.5 and s.test.min_duration_ms == 7000
    assert any(f"from {conf}" in line for line in s.changes)
    assert s.expected_queries(100) == 100  # 3.5 x 7 = 24.5 -> min_query_count 100 -> one permutation


def test_bad_settings_input():
    with pytest.raises(ValueError, match="unknown scenario 'SingleStream'"):
        settings.build("SingleStream", "performance", sample_count=10)
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
