"""A run's files go into UNFINISHED inside its output folder, and into the folder itself only once all
of them are whole: an earlier run's files there are replaced by a complete run's, or not at all.

LoadGen logs into UNFINISHED; the accuracy table, TEST06's verdict, report.md and the charts are written
beside its logs. Publishing flushes every file to the disk first (where a full disk may show only
then), and then renames each over the earlier run's file of its name: the same file system, so a
rename takes no space and swaps a whole file for a whole file.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from llmbench.coordinator.run.outputs import OWN_FILES, UNFINISHED
from llmbench.coordinator.run.written import OutputError, flush, writing


def unfinished(output: Path) -> Path:
    return output / UNFINISHED


def earlier_run_in(output: Path) -> bool:
    """Files under our names in `output` while this run's are still in UNFINISHED are an earlier run's
    (agent-N.log are not among them: `llmbench run` writes its agents' logs in place)."""
    return any((output / name).is_file() for name in OWN_FILES)


def _move_in(folder: Path, output: Path) -> None:
    for path in sorted(folder.iterdir()):
        with writing(output / path.name):
            os.replace(path, output / path.name)
    with writing(folder):
        folder.rmdir()


@dataclass
class Staging:
    output: Path
    earlier: list[Path]  # an earlier run's files in `output` (outputs.check_folder), gone once this run's are in

    @property
    def folder(self) -> Path:
        return unfinished(self.output)

    def start(self) -> Path:
        """A fresh UNFINISHED: what a run that did not finish left there is no result."""
        with writing(self.folder):
            if self.folder.is_dir():
                shutil.rmtree(self.folder)
            self.folder.mkdir()
        return self.folder

    def publish(self) -> None:
        """This run's files into the output folder, replacing the earlier run's; its files that this
        run did not write (an accuracy.txt after a performance run) go, so the folder holds one run."""
        for path in sorted(self.folder.iterdir()):
            flush(path)
        written = {p.name for p in self.folder.iterdir()}
        _move_in(self.folder, self.output)
        for path in self.earlier:
            if path.name not in written:
                with writing(path):
                    path.unlink(missing_ok=True)
        flush(self.output)  # the renames themselves

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    @contextlib.contextmanager
    def whole_or_nothing(self) -> Iterator[None]:
        """A write that failed ends the run with this run's files removed (short, they are no result,
        and on a full disk they hold the space a retry needs) and the earlier run's left as they were."""
        try:
            yield
        except OutputError as exc:
            self.discard()
            kept = (f"; the earlier run's files in {self.output} are left as they were" if self.earlier else "")
            raise OutputError(f"{exc}; this run's files were removed{kept}") from None


def after_interrupt(output: Path) -> Path:
    """Where a run stopped by Ctrl-C or SIGTERM leaves its files: in `output` itself where that loses
    nothing (partial as they are, they are all the run has to show), else in UNFINISHED, beside the
    earlier run's files that they must not replace."""
    folder = unfinished(output)
    if not folder.is_dir() or earlier_run_in(output):
        return folder
    try:
        _move_in(folder, output)
    except OutputError:  # the interruption is what the user must hear of; the files stay where they are
        return folder
    return output
