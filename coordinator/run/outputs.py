"""The files llmbench writes into a run's output folder, and the checks that a path can take them.

A reused output folder must not mix two runs, nor lose a complete one to a run that does not finish:
the new run writes into UNFINISHED inside it, and its files replace the earlier run's only once they
are all whole (staging.py); anything else found there is named once, and files under our names that no
run wrote are refused. Every path is checked before the work that fills it, so a bad one costs a
second, not a run.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"  # report.md's figures for scripts (docs/results.md)
CHART_FILES = {"throughput": "throughput.png", "latency": "latency.png", "agents": "agents.png"}
ACCURACY_FILE = "accuracy.txt"
VERIFY_FILE = "verify_accuracy.txt"  # MLPerf's TEST06 verdict
ACCURACY_LOG, AUDIT_FILE = "mlperf_log_accuracy.json", "audit.config"
LOADGEN_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", ACCURACY_LOG, "mlperf_log_trace.json", AUDIT_FILE)
UNFINISHED = ".llmbench-unfinished"  # hidden: a run's files until they are all whole
AGENT_LOG = re.compile(r"agent-\d+\.log")  # `llmbench run`'s local agents
AGENT_LOG_HEADER = "# llmbench run, local agent"  # their first line: a failed run's logs are still ours
OWN_FILES = frozenset((REPORT_FILE, RESULTS_FILE, ACCURACY_FILE, VERIFY_FILE, *CHART_FILES.values(), *LOADGEN_FILES))
SHOWN = 8  # names listed in one line


def written_by_us(name: str) -> bool:
    return name in OWN_FILES or AGENT_LOG.fullmatch(name) is not None


def writable_folder(path: Path, flag: str) -> Path:
    """Create `path` if needed and check that files can be written there; errors name the flag and path."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None
    return path


def writable_file(path: Path, flag: str) -> Path:
    """Check that `path` can be written (its folder exists and takes files) before the work that fills it."""
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder, not a file")
    if not path.parent.is_dir():
        raise ValueError(f"{flag} {path}: the folder {path.parent} does not exist")
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot write in {path.parent} ({exc.strerror or exc})") from None
    return path


REPORT_HEADER = "# llmbench report"
RUN_MARKERS = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")  # only LoadGen writes these names


def _names(paths: list[Path]) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in paths[:SHOWN]]
    return ", ".join(names) + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def _starts_with(path: Path, header: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(header)
    except OSError:
        return False


def _run_folder(folder: Path) -> bool:
    """An earlier llmbench run wrote here: LoadGen's logs, our report.md, or (a run that failed before
    LoadGen) its agents' logs."""
    if any((folder / name).is_file() for name in RUN_MARKERS) or _starts_with(folder / REPORT_FILE, REPORT_HEADER):
        return True
    return any(AGENT_LOG.fullmatch(p.name) and _starts_with(p, AGENT_LOG_HEADER) for p in folder.iterdir())


def check_folder(folder: Path, flag: str = "--output") -> tuple[list[Path], list[str]]:
    """Check that `folder` can take a run without losing anything that is not an earlier run's.

    Returns the earlier run's files, which the run replaces once its own are whole (staging.py), and
    one line per thing the user should know. Files named like ours that no llmbench run wrote (a
    user's own report.md), or folders and links under our names, are refused: they would be
    overwritten, or break LoadGen's logging."""
    writable_folder(folder, flag)
    entries = sorted(p for p in folder.iterdir() if p.name != UNFINISHED)
    named = [p for p in entries if written_by_us(p.name)]
    odd = [p for p in named if p.is_symlink() or not p.is_file()]
    if odd:
        raise ValueError(f"{flag} {folder}: {_names(odd)} must be a plain file for this run to write it; "
                         f"move it or choose another folder")
    if named and not _run_folder(folder):
        raise ValueError(f"{flag} {folder} holds {_names(named)}, which this run would overwrite, but no "
                         f"earlier llmbench run wrote them (no LoadGen log, no llmbench report.md there): move "
                         f"them or choose another folder")
    stale = [p for p in named if not AGENT_LOG.fullmatch(p.name)]  # `run` rewrites its agents' logs itself
    others = [p for p in entries if p not in named]
    notes = []
    if stale:
        notes.append(f"{flag} {folder}: an earlier llmbench run's files ({_names(stale)}) will be replaced once "
                     f"this run's files are all written, and stay as they are if it does not finish")
    if (folder / UNFINISHED).exists():
        notes.append(f"{flag} {folder}: {UNFINISHED}/ holds the files of a run that did not finish; they are "
                     f"removed when this run's LoadGen test starts")
    if others:
        notes.append(f"{flag} {folder} also holds {len(others)} {'entry' if len(others) == 1 else 'entries'} "
                     f"llmbench did not write, left as they are: {_names(others)}")
    return stale, notes

