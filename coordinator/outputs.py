"""The files llmbench writes into a run's output folder, and the checks that a path can take them.

A reused output folder must not mix two runs: before a run starts, the files an earlier llmbench run
wrote there are removed (the new run writes its own), and anything else found there is named once.
Every path is checked before the work that fills it, so a bad one costs a second, not a run.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

REPORT_FILE = "report.md"
CHART_FILES = {"throughput": "throughput.png", "latency": "latency.png", "agents": "agents.png"}
ACCURACY_FILE = "accuracy.txt"
VERIFY_FILE = "verify_accuracy.txt"  # MLPerf's TEST06 verdict
LOADGEN_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json",
                 "mlperf_log_trace.json", "audit.config")
AGENT_LOG = re.compile(r"agent-\d+\.log")  # `llmbench run`'s local agents
OWN_FILES = frozenset((REPORT_FILE, ACCURACY_FILE, VERIFY_FILE, *CHART_FILES.values(), *LOADGEN_FILES))
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


def _count(items: list, one: str, many: str = "") -> str:
    return f"{len(items)} {one if len(items) == 1 else many or one + 's'}"


def _names(paths: list[Path]) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in paths[:SHOWN]]
    return ", ".join(names) + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def prepare(folder: Path, flag: str = "--output") -> list[str]:
    """Make `folder` ready for a run: created, writable, and without an earlier run's files. Returns
    one line per thing the user should know (what was replaced, what else is there)."""
    writable_folder(folder, flag)
    entries = sorted(folder.iterdir())
    ours = [p for p in entries if p.is_file() and written_by_us(p.name)]
    others = [p for p in entries if p not in ours]
    for p in ours:
        try:
            p.unlink()
        except OSError as exc:
            raise ValueError(f"{flag} {folder}: cannot remove {p.name} of an earlier run ({exc.strerror})") from None
    notes = []
    if ours:
        notes.append(f"{flag} {folder}: removed {_count(ours, 'file')} of an earlier llmbench run ({_names(ours)})")
    if others:
        notes.append(f"{flag} {folder} also holds {_count(others, 'entry', 'entries')} llmbench did not write, "
                     f"left as they are: {_names(others)}")
    return notes
