"""results.json after a real short run (simulated agents on loopback, real LoadGen), checked against
LoadGen's own summary and detail logs and the run's counters."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
import socket

import pytest
import short_run

from llmbench.coordinator.report import markdown, results
from llmbench.coordinator.run import outputs


@pytest.fixture(scope="module")
def server_run(tmp_path_factory):
    """One Server run finished as `llmbench run` finishes it: (result, its results.json, report.md's text)."""
    result, metrics = short_run.server_run(tmp_path_factory.mktemp("run"))
    markdown.finish_run(result, metrics)
    out = result.output
    return result, json.loads((out / outputs.RESULTS_FILE).read_text()), (out / outputs.REPORT_FILE).read_text()


def summary_field(out, label: str) -> str:
    """A field of LoadGen's mlperf_log_summary.txt, as LoadGen printed it."""
    m = re.search(rf"^{re.escape(label)}\s*:\s*(\S+)\s*$", (out / "mlperf_log_summary.txt").read_text(), re.MULTILINE)
    assert m, label
    return m.group(1)


@pytest.mark.slow
def test_results_json_is_written_and_moved_with_the_run(server_run):
    result, doc, _ = server_run
    assert outputs.RESULTS_FILE in outputs.OWN_FILES
    assert (result.output / outputs.RESULTS_FILE).is_file() and not (result.output / outputs.UNFINISHED).exists()
    assert doc["schema"] == results.SCHEMA and doc["schema_version"] == results.SCHEMA_VERSION
    assert doc["run"]["benchmark"] == "llama3.1-8b" and doc["run"]["scenario"] == "Server"
    assert doc["run"]["outcome"] == markdown.outcome(result)
    assert doc["run"]["mlperf_settings"] is False and doc["run"]["settings_changes"] == result.settings.changes
    assert doc["run"]["dataset"] == {"name": "synthetic(n=40, seed=0)", "samples": 40, "max_new_tokens": 128,
                                     "synthetic": True}


@pytest.mark.slow
def test_effective_settings_and_result_fields_are_loadgens(server_run):
    result, doc, _ = server_run
    out, effective, lg = result.output, doc["settings"]["effective"], doc["loadgen"]
    # What LoadGen ran with, after its own rules: its summary's "Test Parameters Used".
    assert effective["target_qps"] == float(summary_field(out, "target_qps")) == 50
    assert effective["min_duration_ms"] == int(summary_field(out, "min_duration (ms)")) == 3000
    assert effective["qsl_rng_seed"] == int(summary_field(out, "qsl_rng_seed"))
    assert effective["performance_sample_count"] == int(summary_field(out, "performance_sample_count")) == 40
    assert doc["settings"]["requested"]["target_qps"] == "50"
    assert lg["result"] == summary_field(out, "Result is") == result.summary.result
    assert lg["samples_per_s"] == float(summary_field(out, "Completed samples per second"))
    assert lg["fields"]["completed_samples_per_sec"] == pytest.approx(lg["samples_per_s"], abs=0.01)
    assert lg["fields"]["first_token_99.00_percentile_latency_ns"] == int(
        summary_field(out, "99.00 percentile first token latency (ns)"))
    assert lg["fields"]["99.90_percentile_latency_ns"] == int(summary_field(out, "99.90 percentile latency (ns)"))
    assert lg["fields"]["query_count"] == result.snapshot.completed
    assert lg["version"].split()[0] == importlib.metadata.version("mlcommons_loadgen")
    assert lg["target_qps"] == 50 and lg["ttft_limit_ms"] == 2000 and lg["tpot_limit_ms"] == 100


@pytest.mark.slow
def test_latency_distributions_are_the_coordinators_measurements(server_run):
    result, doc, _ = server_run
    s, lat = result.snapshot, doc["latency_ms"]
    assert lat["percentiles"] == [50, 90, 95, 99, 99.9]
    for name, measured in (("ttft", s.ttft_s), ("tpot", s.tpot_s)):
        d = lat[name]
        assert d["count"] == measured.count == s.completed
        assert d["p50"] == pytest.approx(measured.p50 * 1000) and d["p99"] == pytest.approx(measured.p99 * 1000)
        assert d["min"] <= d["p50"] <= d["p90"] <= d["p95"] <= d["p99"] <= d["p99.9"] <= d["max"]
    # End to end: the coordinator's clock beside LoadGen's (issue to completion, on loopback).
    e2e, loadgen_ms = lat["e2e"], doc["loadgen"]["fields"]["50.00_percentile_latency_ns"] / 1e6
    assert e2e["count"] == s.completed and e2e["p50"] == pytest.approx(loadgen_ms, rel=0.25, abs=5)
    # Every output token after a query's first is one gap (the simulated agent sends one per step), and a
    # query's gaps add up to its first-to-last-token time, which TPOT spreads over the same tokens.
    itl, tpot = lat["itl"], lat["tpot"]
    assert s.output_tokens == 128 * s.completed
    assert 0 < itl["count"] <= s.output_tokens - s.completed
    assert itl["mean"] * itl["count"] <= tpot["mean"] * tpot["count"] * 127 * (1 + 1e-9)
    assert itl["mean"] * itl["count"] == pytest.approx(tpot["mean"] * tpot["count"] * 127, rel=0.05)


@pytest.mark.slow
def test_agents_system_and_wall_clock(server_run):
    result, doc, _ = server_run
    s = result.snapshot
    agents = doc["agents"]
    assert [a["address"] for a in agents] == [a.address for a in s.agents]
    assert sum(a["queries"] for a in agents) == s.completed
    assert sum(a["queries_share"] for a in agents) == pytest.approx(1)
    assert sum(a["output_tokens_share"] for a in agents) == pytest.approx(1)
    for entry, counters in zip(agents, s.agents):
        assert entry["device"] == counters.status.model.device == "cpu"
        assert entry["precision"]["summary"] == "none" and entry["engine"] == "simulated"
        assert 0 < entry["busy_share"] <= 1 and entry["busy_s"] == pytest.approx(counters.busy_s)
        assert entry["kv_used_mean"] == pytest.approx(counters.kv_used)
        assert entry["kv_tokens_total"] == counters.status.kv_blocks_total * counters.status.kv_block_size
    assert doc["system"]["hostname"] == socket.gethostname()
    assert doc["system"]["packages"]["llmbench"] == importlib.metadata.version("llmbench")
    clock = doc["wall_clock_s"]
    assert clock["loadgen"] == pytest.approx(result.timings_s["loadgen"])
    assert clock["total"] == pytest.approx(sum(v for k, v in clock.items() if k != "total"))
    assert doc["throughput"]["completed"] == s.completed and doc["throughput"]["failed"] == 0
    assert doc["throughput"]["samples_per_s"] == doc["loadgen"]["samples_per_s"]


@pytest.mark.slow
def test_report_tables_have_no_two_columns_of_one_name(server_run):
    _, _, text = server_run
    headers = [line for i, line in enumerate(text.splitlines()[:-1])
               if line.startswith("| ") and text.splitlines()[i + 1].startswith("|---")]
    assert len(headers) >= 4
    for header in headers:
        names = [c.strip() for c in header.strip("|").split("|") if c.strip()]
        repeated = [n for n in names if names.count(n) > 1]
        assert not repeated, header
    assert "| p99 limit | p99 vs limit |" in text


@pytest.mark.slow
def test_projection_says_what_it_projects_and_when_it_is_rough(server_run):
    result, _, text = server_run
    section = text.split("## Projection for the full dataset", 1)[1].split("## ", 1)[0]
    assert "One pass over llama3.1-8b's full 13,368-sample CNN/DailyMail set" in section
    assert "of LoadGen test (not counting the agents' start" in section
    assert f"it comes from only {result.snapshot.completed:,} samples" in section
    assert "the prompts were synthetic" in section
    long_real = dataclasses.replace(result, snapshot=dataclasses.replace(result.snapshot, completed=5000),
                                    dataset=dataclasses.replace(result.dataset, references=["a summary"] * 40))
    assert markdown.projection_caveats(long_real) == []
    assert "rough estimate" not in "\n".join(markdown.projection_section(long_real))
