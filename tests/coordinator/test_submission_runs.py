"""`--submission-runs`: the six runs of a submission (Offline and Server: performance, accuracy, TEST06) in one
command on the same agents, each a whole run in its own folder, that `llmbench submission` then builds from."""
from __future__ import annotations

import json
import re
import shlex

import pytest

from cli_processes import error_of, llmbench
from tokenizers_offline import SHARED_DATA, llama3_tokenizer_file


def test_a_set_that_could_not_make_a_submission_is_refused_first(capsys, tmp_path):
    base = ("coordinator", "--agents", "127.0.0.1:9", "--submission-runs", "--output", tmp_path / "set")
    assert "needs --dataset with reference summaries" in error_of(capsys, *base)
    assert "drop --mode accuracy and --compliance" in error_of(capsys, *base, "--mode", "accuracy")
    assert "two jobs" in error_of(capsys, *base, "--find-peak", "--dataset", "x.json", "--tokenizer", "t")


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_file(), reason="no CNN/DailyMail records in ../shared/data")
def test_the_set_runs_in_one_go_and_builds(sim_agents, tmp_path):
    from test_submission import SYSTEM_FILE  # what a submitter gives that llmbench cannot detect
    out = tmp_path / "set"
    # Each scenario's own rate and duration, as a submitter sets them: Offline one query of 500 x 2 s x 1.1
    # samples; Server 40 QPS for 15 s, 600 queries, enough for LoadGen's early stopping: both VALID.
    conf = tmp_path / "user.conf"
    conf.write_text("*.Offline.target_qps = 500\n*.Offline.min_duration = 2000\n"
                    "*.Server.target_qps = 40\n*.Server.min_duration = 15000\n")
    r = llmbench("coordinator", "--agents", ",".join(a.address for a in sim_agents), "--submission-runs", "--demo",
                 "--dataset", SHARED_DATA, "--tokenizer", llama3_tokenizer_file(), "--max-samples", "20",
                 "--user-conf", conf, "--progress", "0", "--output", out, timeout=900)
    assert r.returncode == 1, r.stdout + r.stderr  # the simulated engine's tokens fail accuracy, nothing else
    folders = {f"{s}-{k}": out / f"{s}-{k}" for s in ("offline", "server") for k in ("performance", "accuracy", "test06")}
    for name, folder in folders.items():
        doc = json.loads((folder / "results.json").read_text())
        assert (doc["run"]["scenario"].lower(), doc["run"]["mode"]) == (name.split("-")[0],
                                                                        "accuracy" if "accuracy" in name else "performance")
    assert all((folders[f"{s}-test06"] / "verify_accuracy.txt").is_file() for s in ("offline", "server"))
    assert all((folders[f"{s}-accuracy"] / "accuracy.txt").is_file() for s in ("offline", "server"))
    assert json.loads((folders["server-performance"] / "results.json").read_text())["loadgen"]["target_qps"] == 40
    assert "exit statuses [0, 1, 0, 0, 1, 0]" in r.stdout, r.stdout
    command = re.search(r"build with:\n  (llmbench submission .*)", r.stdout)[1]
    system_file = tmp_path / "system.json"
    system_file.write_text(json.dumps(SYSTEM_FILE))
    argv = shlex.split(command)[1:] + ["--allow-demo", "--system-file", str(system_file)]
    built = llmbench(*["cpu_box" if a == "NAME" else a for a in argv], timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "2 llama3.1-8b result(s), Offline, Server" in built.stdout
