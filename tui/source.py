"""Where the TUI's RunStatus messages come from: the run in this process, or a coordinator's WatchRun.

The app calls `poll()` at its refresh rate and never waits on a source; `problem` says why nothing
fresh comes (a dropped connection), `abort()` asks the run to stop (only where `controls_run`), and
`ended` says the source will never deliver again.
"""
from __future__ import annotations

import queue
import threading
from typing import Protocol

import grpc

from llmbench.common.auth import ClientSecurity
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.observe.status_service import StatusFeed
from llmbench.proto import pb, rpc

RETRY_S = 2.0


class Source(Protocol):
    controls_run: bool  # q aborts the run (the run is ours) or only leaves (attached)
    description: str

    @property
    def problem(self) -> str: ...
    @property
    def ended(self) -> bool: ...
    def poll(self) -> list[pb.RunStatus]: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...


class Runner(Protocol):
    def abort(self) -> None: ...
    def is_alive(self) -> bool: ...


class LocalSource:
    """The run on this process's benchmark thread, read straight from its RunMetrics."""
    controls_run = True

    def __init__(self, metrics: RunMetrics, runner: Runner) -> None:
        self.feed = StatusFeed(metrics)
        self.runner = runner
        self.description = "this process"
        self._over = False  # the last status went out: the screen keeps the end as it was

    @property
    def problem(self) -> str:
        return ""

    @property
    def ended(self) -> bool:
        return not self.runner.is_alive()

    def poll(self) -> list[pb.RunStatus]:
        if self._over:
            return []
        status = self.feed.next()
        self._over = status.finished
        return [status]

    def abort(self) -> None:
        self.runner.abort()

    def close(self) -> None:
        pass


# Answers that retrying cannot change, and what to do instead.
NEVER_SERVED = {
    grpc.StatusCode.UNIMPLEMENTED: "it is not a coordinator's --status-port (an agent's port?)",
    grpc.StatusCode.UNAUTHENTICATED: "give its token with --auth-token-file or $LLMBENCH_AUTH_TOKEN",
    grpc.StatusCode.PERMISSION_DENIED: "give its token with --auth-token-file or $LLMBENCH_AUTH_TOKEN",
}


class RemoteSource:
    """A coordinator's Coordinator.WatchRun stream, read on a thread; reconnects until the run is over."""
    controls_run = False

    def __init__(self, address: str, interval_ms: int = 500, retry_s: float = RETRY_S,
                 security: ClientSecurity | None = None) -> None:
        self.address = address
        self.security = security or ClientSecurity()
        self.description = f"coordinator {address}"
        self.interval_ms = interval_ms
        self.retry_s = retry_s
        self.problem = f"connecting to {address}"
        self.ended = False
        self.refused = ""  # why the server will never serve this watcher (set once; the source then ends)
        self._messages: queue.SimpleQueue[pb.RunStatus] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._call = None
        self._thread = threading.Thread(target=self._read, name="watch-run", daemon=True)

    def start(self) -> "RemoteSource":
        self._thread.start()
        return self

    def poll(self) -> list[pb.RunStatus]:
        out = []
        while not self._messages.empty():
            out.append(self._messages.get_nowait())
        return out

    def abort(self) -> None:
        pass  # an attached viewer never stops the run

    def close(self) -> None:
        self._closed.set()
        if self._call is not None:
            self._call.cancel()
        self._thread.join(timeout=2)

    def _read(self) -> None:
        connected = False
        while not self._closed.is_set():
            with self.security.channel(self.address) as channel:
                try:
                    self._call = rpc.CoordinatorStub(channel).WatchRun(pb.WatchRunRequest(interval_ms=self.interval_ms),
                                                                       metadata=self.security.metadata)
                    for status in self._call:
                        connected, self.problem = True, ""
                        self._messages.put(status)
                        if status.finished:
                            self.ended = True
                            return
                    problem = f"the coordinator at {self.address} ended the stream before the run was over"
                except grpc.RpcError as exc:
                    if self._closed.is_set():
                        return
                    why = f"{exc.code().name}: {exc.details()}"
                    handshake = self.security.handshake_failure(exc.details() or "")
                    if exc.code() in NEVER_SERVED or handshake:  # retrying cannot help: say so and end
                        self.problem = self.refused = (f"{self.address}: {handshake}" if handshake else
                                                       f"{self.address} refused the watch ({why}): {NEVER_SERVED[exc.code()]}")
                        self.ended = True
                        return
                    why += self.security.closed_hint(exc.details() or "")
                    problem = (f"connection to {self.address} lost ({why})" if connected
                               else f"cannot reach the coordinator at {self.address} ({why})")
            # One assignment: the UI thread reads `problem` at any moment and must never see half a message.
            self.problem = f"{problem}; retrying every {self.retry_s:g} s"
            self._closed.wait(self.retry_s)
