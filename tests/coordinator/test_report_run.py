"""report.md and its charts after a real short run (simulated agents on loopback, real LoadGen)."""
from __future__ import annotations

import dataclasses
import re
import struct

import pytest
from matplotlib import image
from short_run import server_run

from llmbench.coordinator.report import charts, markdown
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run import outputs
from llmbench.coordinator.run.staging import Staging
from llmbench.coordinator.run.written import OutputError
from llmbench.coordinator.loadgen.summary import read_summary

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One Server run: (result, metrics, report path, charted series)."""
    result, metrics = server_run(tmp_path_factory.mktemp("run"))
    path, drawn = markdown.write_report(result, metrics, result.staging.folder)
    result.staging.publish()
    return result, metrics, result.output / path.name, drawn


def section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert m, f"no section {title!r}"
    return m.group(1)


@pytest.mark.slow
def test_report_has_the_sections_and_the_numbers_of_the_run(finished_run):
    result, metrics, path, _ = finished_run
    text = path.read_text()
    assert path == result.output / "report.md"
    summary = read_summary(result.output)
    assert f"**Outcome: {summary.result} (llama3.1-8b Server): {summary.samples_per_s:g} samples/s" in text

    settings = section(text, "Settings")
    assert "| target_qps | 50 | 1 | --target-qps |" in settings
    assert "| min_duration (ms) | 3000 | 600000 | --duration |" in settings
    assert "| ttft_latency (ns) | 2000000000 | 2000000000 |  |" in settings  # unchanged: no reason
    assert f"{len(result.settings.changes)} settings differ from MLPerf's" in settings
    assert "Dataset: synthetic(n=40, seed=0), 40 samples" in settings

    loadgen = section(text, "LoadGen summary")
    assert f"| result | **{summary.result}** |" in loadgen
    assert f"| samples per second | {summary.samples_per_s:g} |" in loadgen
    assert f"| TTFT p99 (ms) | {summary.ttft_p99_ms:.1f} (limit 2000) |" in loadgen
    s = result.snapshot
    assert f"| TTFT | {s.ttft_s.count} | {s.ttft_s.p50 * 1000:.1f} |" in loadgen
    assert f"Queries: {s.completed:,} answered, 0 failed" in loadgen

    agents = section(text, "Work per agent")
    shares = []
    for a in s.agents:
        row = next(line for line in agents.splitlines() if line.startswith(f"| {a.address} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:5] == [a.status.node_name, "cpu", "simulated (simulated)", "none"]
        assert int(cells[5].replace(",", "")) == a.queries_done > 0
        shares.append(float(cells[6].rstrip("%")))
    assert sum(shares) == pytest.approx(100, abs=0.2)

    projection = section(text, "Projection for the full dataset")
    m = re.search(r"One pass over llama3.1-8b's full 13,368-sample CNN/DailyMail set at the ([\d.]+) samples/s "
                  r"measured here, with these agents, would take \*\*(\d+) min (\d+) s\*\*", projection)
    assert m and float(m.group(1)) == pytest.approx(summary.samples_per_s, abs=0.01)
    assert int(m.group(2)) * 60 + int(m.group(3)) == pytest.approx(13368 / summary.samples_per_s, abs=1)

    wall = section(text, "Wall-clock time")
    assert f"| the LoadGen test | {result.timings_s['loadgen']:.1f} |" in wall
    assert "| agents connected, model loaded and warmed up |" in wall and "| dataset preparation |" in wall
    total = float(re.search(r"\| \*\*whole job\*\* \| \*\*([\d.]+)\*\* \|", wall).group(1))
    assert total >= sum(result.timings_s.values()) - 0.1
    assert "## Accuracy" not in text  # a performance run has no accuracy table


@pytest.mark.slow
def test_a_run_with_failed_queries_projects_nothing_and_says_so_beside_its_scores(finished_run):
    result = finished_run[0]
    failed = dataclasses.replace(result, snapshot=dataclasses.replace(result.snapshot, failed=3),
                                 accuracy_lines=["ROUGE-1 12.0"])
    note = f"**3 of {result.snapshot.completed} samples failed**: their outputs in the accuracy log are partial or empty"
    projection = "\n".join(markdown.projection_section(failed))
    assert note in projection and "No projection from this run." in projection and "would take" not in projection
    accuracy = markdown.accuracy_section(failed)
    assert note in accuracy[2] and accuracy[-3] == "ROUGE-1 12.0"
    assert markdown.accuracy_section(dataclasses.replace(failed, snapshot=result.snapshot))[2] == "```"


@pytest.mark.slow
def test_charts_are_pngs_of_the_run_series(finished_run):
    result, metrics, path, drawn = finished_run
    for name in ("throughput.png", "latency.png", "agents.png"):
        data = (result.output / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 400 and height >= 150
        assert image.imread(result.output / name).shape[:2] == (height, width)  # decodes as a whole
        assert f"]({name})" in path.read_text()

    points = charts.whole_bins(metrics.throughput())
    series = drawn["throughput"]
    assert len(points) >= 3 and series["elapsed_s"] == [p.elapsed_s for p in points]
    assert series["tokens_per_s"] == [p.tokens_per_s for p in points]
    assert series["target_qps"] == [50.0]  # Server: queries arrive at the target rate
    steps = [b - a for a, b in zip([0.0] + series["elapsed_s"], series["elapsed_s"])]
    assert sum(r * dt for r, dt in zip(series["samples_per_s"], steps)) == pytest.approx(result.snapshot.completed)

    latency = drawn["latency"]
    assert len(latency["ttft_ms"]) == result.snapshot.ttft_s.count == result.snapshot.completed
    assert max(latency["ttft_ms"]) == pytest.approx(result.snapshot.ttft_s.max * 1000)
    assert latency["limits_ms"] == [2000.0, 100.0]

    load = drawn["agents"]
    assert load["queries"] == [float(a.queries_done) for a in result.snapshot.agents]
    assert sum(load["queries"]) == result.snapshot.completed
    assert sum(load["output_tokens"]) == result.snapshot.output_tokens


@pytest.mark.slow
def test_accuracy_table_and_failures_go_into_the_report(finished_run, tmp_path):
    result, metrics, _, _ = finished_run
    table = ["MLPerf accuracy, llama3.1-8b on CNN/DailyMail (40 samples)", "rouge1         38.9000  >= 38.3914  PASS"]
    scored = dataclasses.replace(result, accuracy_lines=table, error="agent 127.0.0.1:1: gave up after 4 attempts")
    path, _ = markdown.write_report(scored, metrics, tmp_path)
    text = path.read_text()
    assert section(text, "Accuracy").strip() == "```\n" + "\n".join(table) + "\n```"
    assert "**Outcome: 0 of " in text and "gave up after 4 attempts" in text


@pytest.mark.slow
def test_a_report_that_cannot_be_written_fails_the_run(finished_run, tmp_path):
    """No exit status stands on a report that is not there: the run fails, the earlier run's files stay."""
    result, _, _, _ = finished_run
    metrics = RunMetrics()
    out = tmp_path / "out"
    (out / outputs.UNFINISHED / outputs.REPORT_FILE).mkdir(parents=True)  # report.md cannot be written there
    (out / outputs.REPORT_FILE).write_text("# llmbench report: the earlier run\n")
    staged = dataclasses.replace(result, output=out, staging=Staging(out, [out / outputs.REPORT_FILE]))
    with pytest.raises(OutputError, match=rf"^cannot write {re.escape(str(out / outputs.UNFINISHED))}/report\.md: Is a "
                                          r"directory \(EISDIR\); this run's files were removed; the earlier run's "
                                          rf"files in {re.escape(str(out))} are left as they were$"):
        markdown.finish_run(staged, metrics)
    assert (out / outputs.REPORT_FILE).read_text() == "# llmbench report: the earlier run\n"
    assert not (out / outputs.UNFINISHED).exists() and not metrics.finished
