"""`llmbench submission` end to end: short CPU runs (real LoadGen, two simulated agents on loopback, real
CNN/DailyMail records for the accuracy runs) built into a submission tree and judged by MLCommons' own
tools from ../shared/tools/mlperf, run unmodified: the submission checker, truncate_accuracy_log.py and
the TEST06 verifier. Skips where those tools or the records are absent."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlperf_loadgen as lg
import pytest

from llmbench.coordinator.submission import checker, conf_files, run_folder

from tokenizers_offline import SHARED_DATA, llama3_tokenizer_file

TOOLS = Path(__file__).resolve().parents[3] / "shared" / "tools" / "mlperf"
CLI = [sys.executable, "-c", "import sys; from llmbench.cli import main; sys.exit(main())"]
ORG, SYSTEM = "ORG", "cpu_box"
SCENARIOS = ("Offline", "Server")
# What the submitter says that llmbench cannot detect.
SYSTEM_FILE = {"status": "available", "host_storage_capacity": "100 GB", "host_storage_type": "SSD",
               "host_networking": "loopback", "host_network_card_count": "1", "host_networking_topology": "one node",
               "host_memory_configuration": "unknown", "cooling": "air", "system_name": "a CPU test box"}
# The checker's checks these demo runs fail, each by what makes it fail; any other failure fails the test.
DEMO_FAILURES = {
    ("PerformanceCheck.performance_sample_count_check", "Offline"): "a performance set of 50 samples, not 13,368",
    ("PerformanceCheck.min_query_count_check", "Offline"): "one Offline query of 1,100 samples, not 13,368",
    ("PerformanceCheck.min_duration_check", "Offline"): "2 s, not 600 s",
    ("PerformanceCheck.performance_sample_count_check", "Server"): "a performance set of 50 samples, not 13,368",
    ("PerformanceCheck.min_duration_check", "Server"): "15 s, not 600 s",
    ("AccuracyCheck.accuracy_result_check", "Offline"): "the simulated engine's tokens: ROUGE near 0",
    ("AccuracyCheck.dataset_check", "Offline"): "20 of the 13,368 samples",
    ("AccuracyCheck.accuracy_result_check", "Server"): "the simulated engine's tokens: ROUGE near 0",
    ("AccuracyCheck.dataset_check", "Server"): "20 of the 13,368 samples",
}

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (TOOLS / "submission" / "submission_checker").is_dir(),
                                                   reason="MLCommons' tools are not in ../shared/tools/mlperf"),
              pytest.mark.skipif(not SHARED_DATA.is_file(), reason="no CNN/DailyMail records in ../shared/data")]


def llmbench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def run_flags(scenario: str, kind: str, tokenizer: Path) -> list[str]:
    flags = ["--scenario", scenario, "--demo", "--progress", "0"]
    if kind == "accuracy":
        return flags + ["--mode", "accuracy", "--dataset", str(SHARED_DATA), "--tokenizer", str(tokenizer),
                        "--max-samples", "20"]
    # Offline: one query of 500 x 2 s x 1.1 = 1,100 samples; Server: 40 QPS x 15 s = 600 queries, above the 459
    # LoadGen's early stopping needs, at a rate a busy 2-core box routes within the TTFT limit.
    rate, duration = ("500", "2") if scenario == "Offline" else ("40", "15")
    flags += ["--max-samples", "50", "--target-qps", rate]
    if kind == "TEST06":
        return flags + ["--compliance", "TEST06", "--duration", "2"]
    return flags + ["--duration", duration]


@pytest.fixture(scope="module")
def runs(sim_agents, tmp_path_factory) -> dict[tuple[str, str], Path]:
    tokenizer = llama3_tokenizer_file()
    agents = ",".join(a.address for a in sim_agents)
    folders = {}
    for scenario in SCENARIOS:
        for kind in ("performance", "accuracy", "TEST06"):
            out = tmp_path_factory.mktemp(f"{scenario}-{kind}")
            r = llmbench("coordinator", "--agents", agents, *run_flags(scenario, kind, tokenizer), "--output", str(out))
            assert r.returncode in (0, 1), r.stdout + r.stderr  # 1: accuracy FAIL (fake tokens)
            folders[scenario, kind] = out
    return folders


def build(runs, out: Path, *extra: str, folders=None, system_file: Path | None = None) -> subprocess.CompletedProcess:
    if system_file is None:
        system_file = out.parent / "system.json"
        system_file.write_text(json.dumps(SYSTEM_FILE))
    chosen = folders if folders is not None else list(runs.values())
    return llmbench("submission", "--submitter", ORG, "--system", SYSTEM, "--system-file", str(system_file),
                    *map(str, chosen), "--output", str(out), *extra)


@pytest.fixture(scope="module")
def tree(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "submission"
    r = build(runs, out, "--allow-demo")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"wrote {out / 'closed' / ORG}: 2 llama3.1-8b result(s), Offline, Server" in r.stdout
    assert "not a valid submission (--allow-demo)" in r.stdout
    return out


def scenario_of(row: checker.CheckRow) -> str | None:
    return next((s for s in SCENARIOS if f"/{s}/" in row.path), None)


def test_mlcommons_checker_fails_only_what_demo_settings_explain(tree):
    verdict = checker.run(TOOLS, tree)
    assert verdict.rows, verdict.output
    failed = {(row.name, scenario_of(row)) for row in verdict.failed}
    unexplained = failed - set(DEMO_FAILURES)
    assert not unexplained, "\n".join(verdict.summary_lines())
    assert failed == set(DEMO_FAILURES), f"expected to fail and passed: {set(DEMO_FAILURES) - failed}"
    checked = {row.name for row in verdict.rows}
    # Every part of the tree was looked at and passed where demo settings do not stand in the way.
    for passed in ("SystemCheck.required_fields_check", "MeasurementsCheck.required_files_check",
                   "MeasurementsCheck.directory_exist_check", "ComplianceCheck.accuracy_check",
                   "AccuracyCheck.accuracy_json_check", "PerformanceCheck.seeds_check", "PerformanceCheck.llm_check",
                   "PerformanceCheck.latency_check", "PerformanceCheck.get_performance_metric_check"):
        assert passed in checked and all(r.passed for r in verdict.rows if r.name == passed), passed
    for scenario in SCENARIOS:  # its regexes found all four ROUGE scores and gen_len in accuracy.txt, and the hash
        found = [line for line in verdict.output.splitlines() if f"/{scenario}/accuracy/" in line and "found=" in line]
        assert len(found) == 5, "\n".join(found)
    assert "not hash value" not in verdict.output
    assert verdict.exit_code == 1  # the checker's own verdict: the demo failures above


def test_check_command_runs_the_checker_for_the_user(tree):
    r = llmbench("submission", "--check", str(TOOLS), "--output", str(tree))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "MLCommons' submission checker: submission has errors" in r.stdout
    assert "FAIL PerformanceCheck.min_duration_check" in r.stdout and "Test duration less than 600s" in r.stdout


def test_official_test06_verifier_agrees_with_each_test06_run(runs, tmp_path):
    verifier = TOOLS / "compliance" / "TEST06" / "run_verification.py"
    for scenario in SCENARIOS:
        run = runs[scenario, "TEST06"]
        out = tmp_path / scenario
        r = subprocess.run([sys.executable, str(verifier), "-c", str(run), "-o", str(out), "-s", scenario,
                            "-e", "128009"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        official = (out / "TEST06" / "verify_accuracy.txt").read_text()
        assert official.endswith("TEST06 verification complete\n"), official
        assert (run / "verify_accuracy.txt").read_text() == official


def test_accuracy_logs_are_truncated_as_mlcommons_script_does(runs, tree, tmp_path):
    """The official script on the same tree with the whole logs gives byte for byte what we wrote."""
    whole = tmp_path / "whole"
    shutil.copytree(tree, whole)
    results = Path("closed", ORG, "results", SYSTEM, "llama3.1-8b")
    for scenario in SCENARIOS:
        accuracy_dir = whole / results / scenario / "accuracy"
        for name in ("mlperf_log_accuracy.json", "accuracy.txt"):
            shutil.copyfile(runs[scenario, "accuracy"] / name, accuracy_dir / name)
    r = subprocess.run([sys.executable, str(TOOLS / "submission" / "truncate_accuracy_log.py"), "--input", str(whole),
                        "--submitter", ORG, "--output", str(tmp_path / "official")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    for scenario in SCENARIOS:
        for name in ("mlperf_log_accuracy.json", "accuracy.txt"):
            ours = (tree / results / scenario / "accuracy" / name).read_bytes()
            assert ours == (tmp_path / "official" / results / scenario / "accuracy" / name).read_bytes(), name
        assert len(ours) < 10 * 1024 or name != "mlperf_log_accuracy.json"
    text = (tree / results / "Offline" / "accuracy" / "accuracy.txt").read_text()
    assert text.startswith("Results\n\n{'rouge1': '") and "'gen_len': " in text and "\nhash=" in text


def test_user_conf_gives_loadgen_the_runs_settings_back(runs, tree):
    for scenario in SCENARIOS:
        run = run_folder.read(runs[scenario, "performance"])
        user_conf = tree / "closed" / ORG / "results" / SYSTEM / "llama3.1-8b" / scenario / "user.conf"
        t = lg.TestSettings()
        t.scenario = getattr(lg.TestScenario, scenario)
        t.FromConfig("", run.conf_model, scenario, 0)
        assert t.FromConfig(str(user_conf), run.conf_model, scenario, 1) == 0
        for attr, _, _ in conf_files.CONF_KEYS:
            logged = run.detail.get(f"requested_{attr}")
            if logged is not None:
                assert float(getattr(t, attr)) == float(logged), (scenario, attr)
        mlperf_conf = (user_conf.parent / "mlperf.conf").read_text()
        assert "llama3_1-8b.*.performance_sample_count_override = 13368" in mlperf_conf


def test_system_description_is_this_machine(tree):
    system = json.loads((tree / "closed" / ORG / "systems" / f"{SYSTEM}.json").read_text())
    assert system["submitter"] == ORG and system["division"] == "closed" and system["system_type"] == "datacenter"
    assert system["number_of_nodes"] == 1 and system["accelerators_per_node"] == "0"  # CPU agents
    assert system["host_processors_per_node"] >= 1 and system["host_memory_capacity"].endswith(" GB")
    assert system["framework"].startswith("llmbench ") and "PyTorch" in system["framework"]
    assert system["cooling"] == "air" and system["system_name"] == "a CPU test box"  # the submitter's


def copy_with(run: Path, to: Path, change) -> Path:
    shutil.copytree(run, to)
    results = json.loads((to / "results.json").read_text())
    change(results)
    (to / "results.json").write_text(json.dumps(results))
    return to


def refused(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("llmbench submission: error: "), r.stderr
    return errors[0]


def test_refusals_say_why(runs, tmp_path):
    every = list(runs.values())
    line = refused(build(runs, tmp_path / "a"))
    assert "these runs are not at MLPerf's settings (" in line and "more): rerun them with --mlperf-settings" in line
    perf_only = [runs["Offline", "performance"]]
    assert "has no accuracy run" in refused(build(runs, tmp_path / "b", "--allow-demo", folders=perf_only))

    def older(results):
        results["system"]["packages"]["llmbench"] = "0.0.1"
    mixed = copy_with(runs["Server", "accuracy"], tmp_path / "older", older)
    line = refused(build(runs, tmp_path / "c", "--allow-demo", folders=[*every[:4], mixed, every[5]]))
    assert "the runs mix llmbench versions (0.0.1: " in line

    def fp8(results):
        results["agents"][0]["precision"]["quantization"] = "fp8"
    line = refused(build(runs, tmp_path / "d", "--allow-demo",
                         folders=[*every[:4], copy_with(runs["Server", "accuracy"], tmp_path / "fp8", fp8), every[5]]))
    assert "the runs mix models or precisions" in line

    def failed(results):
        results["compliance"]["passed"] = False
    line = refused(build(runs, tmp_path / "e", "--allow-demo",
                         folders=[*every[:2], copy_with(runs["Offline", "TEST06"], tmp_path / "t06", failed), *every[3:]]))
    assert "Offline: TEST06 failed in" in line

    bare = tmp_path / "bare"
    shutil.copytree(runs["Offline", "performance"], bare)
    (bare / "results.json").unlink()
    assert "no results.json" in refused(build(runs, tmp_path / "f", "--allow-demo", folders=[bare]))
    no_cooling = tmp_path / "no-cooling.json"
    no_cooling.write_text(json.dumps({k: v for k, v in SYSTEM_FILE.items() if k != "cooling"}))
    line = refused(build(runs, tmp_path / "g", "--allow-demo", system_file=no_cooling))
    assert "the system description needs cooling" in line and "--system-file" in line
