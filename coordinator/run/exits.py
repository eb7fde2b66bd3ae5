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

from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run.outputs import AGENT_LOG, LOADGEN_FILES, REPORT_FILE
from llmbench.coordinator.run.session import RunResult, loadgen_running
from llmbench.coordinator.run.staging import after_interrupt, earlier_run_in
from llmbench.coordinator.run.written import OutputError

EXIT_STATUSES = """\
exit status:
  0    the run finished and met its bar: every query answered, LoadGen's result VALID (performance),
       accuracy PASS or not scored; with --compliance TEST06, its PASS (the audit run's own LoadGen
       result is short by design and does not count)
  1    the run finished and missed it: LoadGen's result INVALID, accuracy FAIL, TEST06 FAIL, or
       queries that failed
  2    bad input or a run that could not go on (flags, dataset, output folder, agents unreachable, every
       agent lost for --no-agent-timeout, a file of the run that could not be written: a full disk)
  130  interrupted: Ctrl-C, or aborted from the TUI
  143  stopped by SIGTERM (a deleted Job, systemctl stop)
A run's files replace an earlier run's in the output folder only once they are all written: a run
that fails or is stopped leaves an earlier run's files as they were. Ctrl-C and SIGTERM leave what
was written so far: LoadGen's logs (partial if its test had not finished), a short report.md saying
where the run stopped (once its LoadGen test had started, and not under the TUI) and `llmbench run`'s
agent-N.log; beside an earlier run's files, in the folder's .llmbench-unfinished/. An error after the
LoadGen test started (other than a failed write) leaves the same files, and its message says where."""
FAILED, USAGE, INTERRUPTED, TERMINATED = 1, 2, 130, 143
BEFORE_LOADGEN = ("starting", "agents", "dataset")  # metrics.phase values with no LoadGen log of this run
LOADGEN_LOGS = tuple(n for n in LOADGEN_FILES if n.startswith("mlperf_log_"))  # audit.config is ours


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
    if result.gave_up:  # every agent lost for --no-agent-timeout: the run could not go on
        return USAGE
    return FAILED if failures(result) else 0


def _leave(code: int) -> int:
    """LoadGen cannot be stopped mid-test and must not outlive the interpreter's teardown: with its
    thread still running, leave the process at once (agents already stopped)."""
    if loadgen_running():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def phase_reached(metrics: RunMetrics) -> str:
    """The phase the run was in when it stopped, also once a front marked it over ("aborted")."""
    return metrics.stopped_in if metrics.finished else metrics.phase


def loadgen_logs(output: Path) -> list[str]:
    return [name for name in LOADGEN_LOGS if (output / name).is_file()]


def _joined(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def doing_after_loadgen(phase: str, mode: str) -> str:
    """What a run past its LoadGen test was doing in `phase`."""
    return ("writing the report" if phase == "report" else
            "scoring accuracy" if mode == "accuracy" else "checking its results")


def stopped_when(phase: str, metrics: RunMetrics) -> str:
    """Where in the run it stopped: "after 12 of 40 samples", "before the LoadGen test (phase agents)"."""
    s = metrics.snapshot()
    if phase in BEFORE_LOADGEN:
        return f"before the LoadGen test (phase {phase})"
    if phase == "loadgen":
        return f"after {s.completed:,} of {s.expected:,} samples" if s.expected else "as the LoadGen test started"
    return f"after the LoadGen test ({s.completed:,} samples answered), while {doing_after_loadgen(phase, metrics.mode)}"


def left_behind(phase: str, output: Path, folder: Path, agent_logs: bool) -> str:
    """What the stopped run left: its LoadGen logs and report.md in `folder` (`output`, or its
    UNFINISHED beside an earlier run's files), its agent-N.log in `output` (only `llmbench run` writes
    them; the coordinator's are an earlier run's), naming only files that exist and are this run's."""
    if not output.is_dir():
        return "; nothing written"  # stopped before the output folder was made
    files = []
    if phase not in BEFORE_LOADGEN:  # before, the run had written none (staging.py)
        files += ["LoadGen's partial logs" if phase == "loadgen" else "LoadGen's complete logs"] if loadgen_logs(folder) else []
        files += [REPORT_FILE] if (folder / REPORT_FILE).is_file() else []
    logs = sorted(p.name for p in output.iterdir() if agent_logs and AGENT_LOG.fullmatch(p.name))
    where = output.resolve()
    earlier = (phase in BEFORE_LOADGEN or folder != output) and earlier_run_in(output)
    if not files and not logs:
        return (f"; nothing written: an earlier run's files in {where} are left as they were" if earlier
                else f"; nothing written in {where}")
    places = [(files, folder.resolve()), (logs, where)] if folder != output else [(files + logs, where)]
    said = ("" if files[:1] and files[0].startswith("LoadGen") else "; no LoadGen logs")
    said += "".join(f"; {_joined(names)} in {place}" for names, place in places if names)
    return said + (f"; an earlier run's files in {where} are left as they were" if earlier else "")


def interrupted(exc: KeyboardInterrupt, output: Path, metrics: RunMetrics, command: str) -> int:
    """One line saying where the run stopped and which of its files it left where; the exit status."""
    phase = phase_reached(metrics)
    folder = after_interrupt(output) if phase not in BEFORE_LOADGEN else output
    left = left_behind(phase, output, folder, agent_logs=command == "run")
    print(f"llmbench {command}: interrupted{how(exc)} {stopped_when(phase, metrics)}{left}", file=sys.stderr, flush=True)
    return _leave(TERMINATED if isinstance(exc, Terminated) else INTERRUPTED)


def after_failure(exc: BaseException, output: Path, metrics: RunMetrics, command: str) -> BaseException:
    """An error that ended the run once its LoadGen test had started, with where the run stopped and
    which of its files it left where (placed as after an interrupt); other errors as they are. A failed
    write needs none of this: staging removed that run's files and said so."""
    phase = phase_reached(metrics)
    if not isinstance(exc, Exception) or isinstance(exc, OutputError) or phase in BEFORE_LOADGEN:
        return exc
    folder = after_interrupt(output)
    left = left_behind(phase, output, folder, agent_logs=command == "run")
    return RuntimeError(f"{exc}; the run stopped {stopped_when(phase, metrics)}{left}")


def leave_if_loadgen_running(exc: BaseException, command: str) -> None:
    """After a fatal error with LoadGen mid-test: print what the dispatcher would, and leave."""
    if loadgen_running():
        print(f"llmbench {command}: error: {exc}", file=sys.stderr)
        _leave(USAGE)
