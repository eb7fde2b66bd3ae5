"""The TUI in front of a run in this process (`llmbench coordinator` / `llmbench run` on a terminal).

Threads: Textual owns the main thread (the terminal, key input, SIGTERM); the benchmark runs on a
worker thread in its own asyncio loop (the grpc.aio agent links and the dispatcher), and LoadGen's
StartTest on the thread that loop starts for it. The app only reads RunMetrics (a short lock, at
4 Hz), so drawing never sits on the dispatcher's loop; the worker's loop never waits on the screen.
Aborting cancels the benchmark task on its loop: the agent streams close (queries cancelled on the
agents) and the caller then leaves the process as after Ctrl-C (LoadGen cannot be stopped mid-test).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from dataclasses import replace
from typing import Iterator

from llmbench.coordinator.run.exits import Terminated
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.report.markdown import finish_run
from llmbench.coordinator.run.session import CoordinatorConfig, RunResult, run_benchmark
from llmbench.tui.app import RunApp
from llmbench.tui.source import LocalSource

JOIN_S = 30.0


class BenchmarkThread(threading.Thread):
    """run_benchmark on its own loop, then the report; abort() cancels it from any thread."""

    def __init__(self, cfg: CoordinatorConfig, metrics: RunMetrics) -> None:
        super().__init__(name="benchmark", daemon=True)
        self.cfg = cfg
        self.metrics = metrics
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.aborted = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    def run(self) -> None:
        try:
            self.result = asyncio.run(self._main())
            finish_run(self.result, self.metrics)
        except BaseException as exc:  # a cancelled (aborted) run ends here too
            self.error = exc
            s = self.metrics.snapshot()
            if self.aborted:
                self.metrics.finish("aborted", f"aborted from the TUI after {s.completed} of {s.expected or '?'} "
                                               "samples; agent streams closed, no report written")
            else:
                self.metrics.finish("failed", str(exc) or type(exc).__name__)

    async def _main(self) -> RunResult:
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        if self.aborted:
            raise asyncio.CancelledError
        return await run_benchmark(self.cfg, self.metrics, say=lambda line: None)  # lines go to the metrics' log

    def abort(self) -> None:
        self.aborted = True
        if self._loop is not None and self._task is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed: the run is over
                self._loop.call_soon_threadsafe(self._task.cancel)


@contextlib.contextmanager
def screen_logging() -> Iterator[None]:
    """Log records must not write over the screen: the root's stream handlers step aside while the app
    runs (the run's log pane shows the records, see LogToMetrics)."""
    root = logging.getLogger()
    streams = [h for h in root.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    for h in streams:
        root.removeHandler(h)
    try:
        yield
    finally:
        for h in streams:
            root.addHandler(h)


def run_live(cfg: CoordinatorConfig, metrics: RunMetrics, stay: bool = False) -> RunResult:
    """Run the benchmark with the TUI in front; the result once the run is over and the app has left
    (on its own, or on q with stay). An abort raises KeyboardInterrupt (after saying so), as Ctrl-C
    would; Terminated after SIGTERM."""
    runner = BenchmarkThread(replace(cfg, progress_s=0), metrics)
    app = RunApp(LocalSource(metrics, runner), stay=stay)
    terminated = threading.Event()

    def on_sigterm(signum, frame) -> None:
        terminated.set()
        app.abort_run_threadsafe()
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with screen_logging():
            runner.start()
            app.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if runner.is_alive():  # the app failed or was closed before the run ended
            runner.abort()
        runner.join(JOIN_S)
    if runner.aborted:
        if terminated.is_set():
            raise Terminated
        print(f"llmbench: {metrics.outcome or 'run aborted from the TUI'}", file=sys.stderr, flush=True)
        raise KeyboardInterrupt
    if runner.error is not None:
        raise runner.error
    return runner.result
