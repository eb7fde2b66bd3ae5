"""`llmbench compare` on the results.json of real short runs (`llmbench coordinator` against simulated
agents on loopback, real LoadGen), through the real command line."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from matplotlib import image

from llmbench.coordinator.run.outputs import RESULTS_FILE

CLI = [sys.executable, "-c", "import sys; from llmbench.cli import main; sys.exit(main())"]


def llmbench(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_runs(sim_agents, tmp_path_factory):
    """A Server run and an Offline run of the same agents: their folders."""
    root = tmp_path_factory.mktemp("runs")
    agents = ",".join(a.address for a in sim_agents)
    common = ["--agents", agents, "--max-samples", "40", "--duration", "2", "--progress", "0", "--no-tui"]
    server, offline = root / "server", root / "offline"
    for folder, flags in ((server, ["--scenario", "Server", "--target-qps", "40"]), (offline, ["--scenario", "Offline"])):
        r = llmbench("coordinator", *common, *flags, "--output", str(folder))
        assert r.returncode in (0, 1), r.stderr  # a 2 s run may be INVALID (early stopping); it still finished
        assert (folder / RESULTS_FILE).is_file()
    return server, offline


def ratio_in(cell: str) -> float:
    """The ratio a later run's cell ends with: "7.10 (0.024x)" -> 0.024."""
    m = re.search(r"\(([0-9.e+-]+)x\)$", cell)
    assert m, cell
    return float(m.group(1))


def doc(folder):
    return json.loads((folder / RESULTS_FILE).read_text())


def table_row(stdout: str, label: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if line.startswith(label + "  "))
    return [cell.strip() for cell in line[len(label):].split("  ") if cell.strip()]


@pytest.mark.slow
def test_compare_puts_the_runs_side_by_side_with_ratios_to_the_first(two_runs):
    server, offline = two_runs
    r = llmbench("compare", str(server), str(offline))
    assert r.returncode == 0, r.stderr
    a, b = doc(server), doc(offline)
    header = r.stdout.splitlines()[0].split()
    assert header == [str(server), str(offline)]
    assert table_row(r.stdout, "benchmark / scenario") == ["llama3.1-8b / Server", "llama3.1-8b / Offline"]
    first, second = table_row(r.stdout, "samples/s (LoadGen)")
    ratio = b["loadgen"]["samples_per_s"] / a["loadgen"]["samples_per_s"]
    assert ratio_in(second) == pytest.approx(ratio, abs=0.005)
    assert table_row(r.stdout, "target QPS")[1] == "-"  # Offline has no target rate
    for label, name in (("TTFT", "ttft"), ("TPOT", "tpot"), ("inter-token", "itl"), ("end-to-end", "e2e")):
        for p in ("p50", "p99"):
            cells = table_row(r.stdout, f"{label} {p} (ms)")
            ratio = b["latency_ms"][name][p] / a["latency_ms"][name][p]
            assert ratio_in(cells[1]) == pytest.approx(ratio, rel=0.05, abs=0.005), (label, p, cells)
    assert "TTFT p90 (ms)" not in r.stdout
    r = llmbench("compare", str(server), str(offline), "--percentiles", "90,99.9")
    assert r.returncode == 0 and "TTFT p90 (ms)" in r.stdout and "TTFT p99.9 (ms)" in r.stdout
    assert "TTFT p50 (ms)" not in r.stdout


@pytest.mark.slow
def test_compare_draws_the_ratios_into_a_png(two_runs, tmp_path):
    server, offline = two_runs
    chart = tmp_path / "compare.png"
    r = llmbench("compare", str(server), str(offline), "--chart", str(chart))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"chart: {chart}"
    height, width = image.imread(chart).shape[:2]
    assert width >= 600 and height >= 200


@pytest.mark.slow
def test_runs_from_other_machines_and_versions_compare(two_runs, tmp_path):
    server, _ = two_runs
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(server, elsewhere)
    other = doc(elsewhere)
    other["system"]["hostname"], other["system"]["packages"]["llmbench"] = "gpu-node-7", "0.0.9"
    (elsewhere / RESULTS_FILE).write_text(json.dumps(other))
    r = llmbench("compare", str(server), str(elsewhere))
    assert r.returncode == 0, r.stderr
    assert table_row(r.stdout, "host")[1] == "gpu-node-7"
    assert table_row(r.stdout, "llmbench")[1] == "0.0.9"
    assert ratio_in(table_row(r.stdout, "samples/s (LoadGen)")[1]) == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("make, message", [
    (lambda d: None, "has no results.json: not an llmbench run folder"),
    (lambda d: (d / RESULTS_FILE).write_text("{not json"), "results.json is not JSON: Expecting property name"),
    (lambda d: (d / RESULTS_FILE).write_text(json.dumps({"schema": "llmbench.results", "schema_version": 99})),
     "has schema version 99; this llmbench reads 1 to 1: compare it with a newer llmbench"),
    (lambda d: (d / RESULTS_FILE).write_text(json.dumps({"ok": 1})), "is not an llmbench results file"),
])
def test_a_folder_that_is_no_run_is_one_clear_line(two_runs, tmp_path, make, message):
    server, _ = two_runs
    make(tmp_path)
    r = llmbench("compare", str(server), str(tmp_path))
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    assert r.stderr.startswith("llmbench compare: error: ")


@pytest.mark.slow
def test_bad_arguments_are_one_clear_line(two_runs):
    server, _ = two_runs
    r = llmbench("compare", str(server))
    assert r.returncode == 2 and "give two run folders or more" in r.stderr
    r = llmbench("compare", str(server), str(server), "--percentiles", "97")
    assert r.returncode == 2 and f"{server / RESULTS_FILE} has no p97 (it holds p50, p90, p95, p99, p99.9)" in r.stderr
