"""Whether a run's files were written whole: a failed write is one line naming the file and why.

Python raises on a failed write, but a failed write() names no file, so the run's writes go through
`writing`. LoadGen reports nothing: on a full disk its logs just come out short or empty (an invalid
accuracy log, a 0-byte summary), so they are checked once its test is over, before anything reads them.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from llmbench.coordinator.loadgen.detail_log import DETAIL_FILE
from llmbench.coordinator.loadgen.summary import SUMMARY_FILE
from llmbench.coordinator.run.outputs import ACCURACY_LOG

# LoadGen ends every summary with its error count, also in accuracy mode (where it is nearly all there is).
SUMMARY_END = re.compile(r"(No errors encountered during test|\d+ ERRORS? encountered\. See detailed log)\.?")
DETAIL_RECORD = ":::MLLOG"
FULL_BELOW = 1 << 20  # free bytes under which a short LoadGen log is put down to a full disk


class OutputError(Exception):
    """A file of the run could not be written whole: the run cannot go on (exit status 2)."""


def reason(exc: OSError) -> str:
    """"No space left on device (ENOSPC)": the system's words and the errno's name."""
    name = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror or exc}" + (f" ({name})" if name else "")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[Path]:
    """An OSError while `path` is written (opened, filled, flushed, moved) ends the run naming it."""
    try:
        yield path
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {reason(exc)}") from None


def write_text(path: Path, text: str) -> Path:
    with writing(path):
        path.write_text(text)
    return path


def flush(path: Path) -> None:
    """Onto the disk: a file system that allocates late (ext4, XFS, NFS) may report a full disk only here."""
    with writing(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _summary_short(text: str) -> str:
    last = text.strip().splitlines()[-1:] or [""]
    return "" if SUMMARY_END.fullmatch(last[0].strip()) else "it ends before LoadGen's error count"


def _detail_short(text: str) -> str:
    last = text.rstrip("\n").rsplit("\n", 1)[-1]
    try:
        json.loads(last.split(DETAIL_RECORD, 1)[1])
    except (IndexError, json.JSONDecodeError):
        return "its last record is cut short"
    return "" if text.endswith("\n") else "its last line is cut short"


def _accuracy_short(text: str) -> str:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not JSON: {exc.msg} at line {exc.lineno}"
    return ""


CHECKS = {SUMMARY_FILE: _summary_short, DETAIL_FILE: _detail_short, ACCURACY_LOG: _accuracy_short}


def check_loadgen_logs(folder: Path) -> None:
    """Raise OutputError unless LoadGen's summary, detail and accuracy logs in `folder` are whole (its
    trace log is empty unless tracing is on, so it tells nothing)."""
    short = []
    for name, check in CHECKS.items():
        try:
            data = (folder / name).read_bytes()
        except OSError as exc:
            short.append(f"{name} ({reason(exc)})")
            continue
        text = data.decode(errors="replace")
        why = "empty" if not text.strip() else check(text)
        if why:
            short.append(f"{name} ({why}, {len(data):,} bytes)")
    if short:
        free = shutil.disk_usage(folder).free
        full = f"; {free:,} bytes are free there: the disk is full (ENOSPC)" if free < FULL_BELOW else ""
        raise OutputError(f"LoadGen's logs in {folder} are incomplete: {', '.join(short)}{full}")
