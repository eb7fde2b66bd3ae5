"""The accuracy log cut down for submission, in the form MLCommons' truncate_accuracy_log.py leaves it.

That script's documented output: accuracy.txt gains a line `hash=<sha256 of the whole
mlperf_log_accuracy.json>` (after an empty line), and a log of VIEWABLE bytes or more keeps its first
and last VIEWABLE characters around a "\\n\\n...\\n\\n" marker. The checker reads the hash line and
refuses logs over 10 KiB. The whole log stays in the run folder, which is the copy MLPerf may ask for.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

VIEWABLE = 4096
MARKER = "\n\n...\n\n"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def truncated(text: str) -> str:
    if len(text.encode()) < VIEWABLE:
        return text
    return text[:VIEWABLE] + MARKER + text[-VIEWABLE:]


def write_truncated(log: Path, accuracy_txt: str, out_log: Path, out_txt: Path) -> None:
    """The truncated copy of `log` at out_log, and accuracy_txt with its hash line at out_txt."""
    out_txt.write_text(f"{accuracy_txt}\nhash={sha256(log)}\n")
    out_log.write_text(truncated(log.read_text()))
