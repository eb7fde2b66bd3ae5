"""How `llmbench run` and `llmbench coordinator` end: the exit status, and what an interrupted run leaves.

Scripts and CI read the status: a finished run that misses its bar (LoadGen INVALID, accuracy or
TEST06 FAIL) is 1, as `llmbench accuracy` and `llmbench compliance` already say for theirs.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Iterator

from llmbench.coordinator.metrics import RunMetrics
from llmbench.coordinator.outputs import REPORT_FILE
from llmbench.coordinator.session import RunResult, loadgen_running

EXIT_STATUSES = """\
exit status:
  0    the run finished and met its bar: every query answered, LoadGen's result VALID (performance),
       accuracy PASS or not scored; with --compliance TEST06, its PASS (the audit run's own LoadGen
       result is short by design and does not count)
  1    the run finished and missed it: LoadGen's result INVALID, accuracy FAIL, TEST06 FAIL, or
       queries that failed
  2    bad input or a run that could not go on (flags, dataset, output folder, agents unreachable)
  130  interrupted: Ctrl-C, or aborted from the TUI
  143  stopped by SIGTERM (a deleted Job, systemctl stop)
Ctrl-C and SIGTERM leave LoadGen's partial logs and a short report.md in the output folder."""
FAILED, USAGE, INTERRUPTED, TERMINATED = 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM: the run ends as after Ctrl-C (agents stopped, partial report), with status 143."""


def _terminate(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread while the run lasts (a Job deleted, systemd stop)."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def how(exc: KeyboardInterrupt) -> str:
    """" by SIGTERM", or "" for Ctrl-C and an abort from the TUI."""
    return " by SIGTERM" if isinstance(exc, Terminated) else ""


def failures(result: RunResult) -> list[str]:
    """Why a finished run missed its bar; empty when it met it."""
    why = []
    if result.duplicates:
        why.append(f"{result.duplicates} duplicate answers refused")
    if result.error or result.snapshot.failed:
        why.append(f"{result.snapshot.failed} queries failed")
    # TEST06's audit run is short by design (100 queries, no minimum duration): its checks are the verdict.
    if result.summary.result and result.summary.result != "VALID" and result.compliance_passed is None:
        why.append(f"LoadGen's result is {result.summary.result}")
    if result.accuracy_passed is False:
        why.append("accuracy FAIL")
    if result.compliance_passed is False:
        why.append("TEST06 FAIL")
    return why


def exit_status(result: RunResult) -> int:
    return FAILED if failures(result) else 0


def _leave(code: int) -> int:
    """LoadGen cannot be stopped mid-test and must not outlive the interpreter's teardown: with its
    thread still running, leave the process at once (agents already stopped)."""
    if loadgen_running():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def interrupted(exc: KeyboardInterrupt, output: Path, metrics: RunMetrics, command: str) -> int:
    """One line saying where the partial logs (and report.md, if written) are; the exit status."""
    s = metrics.snapshot()
    report = " and report.md" if (output / REPORT_FILE).is_file() else ""
    where = f"; partial logs{report} in {output.resolve()}" if output.is_dir() else ""
    when = f"after {s.completed:,} of {s.expected:,} samples" if s.expected else "before the LoadGen test"
    print(f"llmbench {command}: interrupted{how(exc)} {when}{where}", file=sys.stderr, flush=True)
    return _leave(TERMINATED if isinstance(exc, Terminated) else INTERRUPTED)


def leave_if_loadgen_running(exc: BaseException, command: str) -> None:
    """After a fatal error with LoadGen mid-test: print what the dispatcher would, and leave."""
    if loadgen_running():
        print(f"llmbench {command}: error: {exc}", file=sys.stderr)
        _leave(USAGE)
