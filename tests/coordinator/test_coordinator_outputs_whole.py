"""A full disk or a failed write: never exit 0 over files that are not whole, never lose an earlier run's.

LoadGen says nothing when its writes fail (the logs come out short), so a real run under a file size
limit (RLIMIT_FSIZE: LoadGen's writes past it fail as they would on a full disk) has its logs cut
short; a write of ours that fails is the operating system's ENOSPC raised where the report is written.
Either way the second run into a folder must end with status 2, one line naming the file and why, and
the first run's files as they were, byte for byte.
"""
from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmbench.coordinator.run import outputs, written
from llmbench.coordinator.run.staging import Staging
from cli_processes import LLMBENCH, error_of, llmbench

SUMMARY = ("================================================\nMLPerf Results Summary\n"
           "================================================\nResult is : VALID\n\n"
           "No warnings encountered during test.\n\nNo errors encountered during test.\n")
DETAIL = (':::MLLOG {"key": "test_datetime", "value": "2026-12-07T15:31:47Z"}\n'
          ':::MLLOG {"key": "power_end", "value": "12-07-2026 15:31:48.135"}\n')
ACCURACY = '[\n{ "seq_id" : 0, "qsl_idx" : 1, "data" : "42B60000", "token_count" : 1 }\n]\n'
WHOLE = {"mlperf_log_summary.txt": SUMMARY, "mlperf_log_detail.txt": DETAIL, "mlperf_log_accuracy.json": ACCURACY}
FILE_LIMIT = 16 * 1024  # below an accuracy log of 40 samples and any detail log


def addresses(agents) -> str:
    return ",".join(a.address for a in agents)


def loadgen_logs(folder: Path, **replaced: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in WHOLE.items():
        (folder / name).write_text(replaced.get(name.split(".")[0], text))
    return folder


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --- LoadGen's logs ---------------------------------------------------------------------------------

def test_whole_loadgen_logs_pass(tmp_path):
    written.check_loadgen_logs(loadgen_logs(tmp_path))
    written.check_loadgen_logs(loadgen_logs(tmp_path, mlperf_log_accuracy="[\n]\n"))  # a performance run's


@pytest.mark.parametrize("log, text, why", [
    ("mlperf_log_summary", "", "mlperf_log_summary.txt (empty, 0 bytes)"),
    ("mlperf_log_summary", SUMMARY[:120], "mlperf_log_summary.txt (it ends before LoadGen's error count, 120 bytes)"),
    ("mlperf_log_detail", DETAIL[:-20], f"mlperf_log_detail.txt (its last record is cut short, {len(DETAIL) - 20} bytes)"),
    ("mlperf_log_accuracy", ACCURACY[:40], "mlperf_log_accuracy.json (not JSON: Expecting ':' delimiter at line 2, "
                                           "40 bytes)"),
])
def test_a_loadgen_log_cut_short_is_named(tmp_path, log, text, why):
    folder = loadgen_logs(tmp_path, **{log: text})
    with pytest.raises(written.OutputError) as failed:
        written.check_loadgen_logs(folder)
    assert str(failed.value) == f"LoadGen's logs in {folder} are incomplete: {why}"


def test_a_missing_log_and_a_full_disk_are_said(tmp_path, monkeypatch):
    folder = loadgen_logs(tmp_path, mlperf_log_accuracy="[\n{ ")
    (folder / "mlperf_log_summary.txt").unlink()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=0))  # a 200 KiB tmpfs, filled
    with pytest.raises(written.OutputError) as failed:
        written.check_loadgen_logs(folder)
    assert str(failed.value) == (
        f"LoadGen's logs in {folder} are incomplete: mlperf_log_summary.txt (No such file or directory (ENOENT)), "
        "mlperf_log_accuracy.json (not JSON: Expecting property name enclosed in double quotes at line 2, 4 bytes); "
        "0 bytes are free there: the disk is full (ENOSPC)")


# --- our writes, and moving the run's files into place ------------------------------------------------

def test_a_failed_write_names_the_file_and_the_errno(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(written.OutputError, match=r"^cannot write .*/report\.md: No space left on device \(ENOSPC\)$"):
        written.write_text(tmp_path / "report.md", "# llmbench report")


def earlier_run(out: Path) -> list[Path]:
    """An earlier run's files and one of the user's; the earlier run's, as outputs.check_folder finds them."""
    loadgen_logs(out)
    (out / outputs.REPORT_FILE).write_text("# llmbench report: the earlier run\n")
    (out / outputs.ACCURACY_FILE).write_text("rouge1 of the earlier run\n")
    (out / "notes.txt").write_text("mine")
    return outputs.check_folder(out)[0]


def test_the_earlier_run_stays_until_every_file_is_on_the_disk(tmp_path, monkeypatch):
    """A file system that allocates late reports a full disk only at fsync: nothing is moved before then."""
    out = tmp_path / "out"
    staging = Staging(out, earlier_run(out))
    before = contents(out)
    loadgen_logs(staging.start())
    (staging.folder / outputs.REPORT_FILE).write_text("# llmbench report: this run\n")
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(written.OutputError) as failed:
        with staging.whole_or_nothing():
            staging.publish()
    assert str(failed.value) == (f"cannot write {staging.folder / outputs.ACCURACY_LOG}: No space left on device "
                                 f"(ENOSPC); this run's files were removed; the earlier run's files in {out} are left "
                                 "as they were")
    assert contents(out) == before and not staging.folder.exists()

    monkeypatch.setattr(os, "fsync", real_fsync)
    loadgen_logs(staging.start())
    (staging.folder / outputs.REPORT_FILE).write_text("# llmbench report: this run\n")
    staging.publish()
    assert (out / outputs.REPORT_FILE).read_text() == "# llmbench report: this run\n"
    assert sorted(contents(out)) == sorted([*WHOLE, outputs.REPORT_FILE, "notes.txt"])  # no accuracy.txt of the earlier run
    assert not staging.folder.exists()


def test_an_unfinished_runs_folder_is_named_and_not_taken_for_a_users(tmp_path):
    (tmp_path / outputs.UNFINISHED).mkdir()
    (tmp_path / outputs.UNFINISHED / "mlperf_log_detail.txt").write_text("partial")
    stale, notes = outputs.check_folder(tmp_path)
    assert stale == [] and notes == [f"--output {tmp_path}: {outputs.UNFINISHED}/ holds the files of a run that did "
                                     "not finish; they are removed when this run's LoadGen test starts"]
    assert Staging(tmp_path, stale).start() == tmp_path / outputs.UNFINISHED
    assert list((tmp_path / outputs.UNFINISHED).iterdir()) == []


# --- real runs into a reused folder ---------------------------------------------------------------------

def first_run(agents, out: Path) -> dict[str, bytes]:
    r = llmbench("coordinator", "--agents", addresses(agents), "--scenario", "Offline", "--mode", "accuracy",
                 "--max-samples", "40", "--output", out, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    files = contents(out)
    assert {*WHOLE, outputs.REPORT_FILE, *outputs.CHART_FILES.values()} <= set(files)
    return files


def limited_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))  # Python ignores SIGXFSZ: writes fail


@pytest.mark.slow
def test_loadgen_logs_cut_short_fail_the_run_and_keep_the_earlier_one(sim_agents, tmp_path):
    out = tmp_path / "out"
    before = first_run(sim_agents, out)
    r = subprocess.run([*LLMBENCH, "coordinator", "--agents", addresses(sim_agents), "--scenario", "Offline",
                        "--mode", "accuracy", "--max-samples", "40", "--output", str(out)],
                       capture_output=True, text=True, timeout=180, preexec_fn=limited_file_size)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(
        f"llmbench coordinator: error: LoadGen's logs in {out / outputs.UNFINISHED} are incomplete: "), r.stderr
    assert "mlperf_log_accuracy.json (not JSON: " in errors[0] and f"{FILE_LIMIT:,} bytes)" in errors[0]
    assert errors[0].endswith(f"this run's files were removed; the earlier run's files in {out} are left as they were")
    assert "Report:" not in r.stdout and "Traceback" not in r.stderr
    assert contents(out) == before and not (out / outputs.UNFINISHED).exists()


@pytest.mark.slow
def test_a_report_that_cannot_be_written_fails_the_run_and_keeps_the_earlier_one(sim_agents, tmp_path, monkeypatch,
                                                                                  capsys):
    out = tmp_path / "out"
    before = first_run(sim_agents, out)
    write_text = Path.write_text
    monkeypatch.setattr(Path, "write_text", lambda path, *args, **kwargs: no_space() if path.name == outputs.REPORT_FILE
                        else write_text(path, *args, **kwargs))
    error = error_of(capsys, "coordinator", "--agents", addresses(sim_agents), "--scenario", "Offline", "--mode",
                     "accuracy", "--max-samples", "40", "--progress", "0", "--output", out)
    assert error == (f"cannot write {out / outputs.UNFINISHED / outputs.REPORT_FILE}: No space left on device (ENOSPC); "
                     f"this run's files were removed; the earlier run's files in {out} are left as they were")
    assert contents(out) == before and not (out / outputs.UNFINISHED).exists()


@pytest.mark.slow
def test_an_error_after_loadgen_says_where_the_runs_files_are(sim_agents, tmp_path, monkeypatch, capsys):
    """Not a write that failed (staging removes those files): an error in scoring left complete LoadGen logs
    in .llmbench-unfinished/ and said nothing of them. Now the one line names them and where they are."""
    from llmbench.coordinator.run import session

    def broken(*args, **kwargs):
        raise RuntimeError("the scorer broke")
    monkeypatch.setattr(session, "evaluate_accuracy", broken)
    run = ("coordinator", "--agents", addresses(sim_agents), "--scenario", "Offline", "--mode", "accuracy",
           "--max-samples", "40", "--progress", "0")
    fresh = tmp_path / "fresh"
    error = error_of(capsys, *run, "--output", fresh)
    assert error == ("the scorer broke; the run stopped after the LoadGen test (40 samples answered), while scoring "
                     f"accuracy; LoadGen's complete logs in {fresh.resolve()}")
    assert set(WHOLE) <= set(contents(fresh)) and not (fresh / outputs.UNFINISHED).exists()

    monkeypatch.undo()
    out = tmp_path / "out"
    before = first_run(sim_agents, out)
    monkeypatch.setattr(session, "evaluate_accuracy", broken)
    error = error_of(capsys, *run, "--output", out)
    assert error == ("the scorer broke; the run stopped after the LoadGen test (40 samples answered), while scoring "
                     f"accuracy; LoadGen's complete logs in {(out / outputs.UNFINISHED).resolve()}; "
                     f"an earlier run's files in {out.resolve()} are left as they were")
    assert contents(out) == before and set(WHOLE) <= set(contents(out / outputs.UNFINISHED))
