"""A run that cannot go on, said from any thread: the benchmark's task ends with `Abandoned`.

`llmbench run` learns on a watcher thread that its local agents died (commands/agent_deaths.py). It used to
signal the main thread and raise there, but that exception lands in whatever frame the main thread happens
to run (a grpc.aio callback that swallows it; Textual, under the TUI, where the run is on another thread),
and the run then waited on. Here the session's own task is cancelled on its own loop, so it unwinds from an
`await` as on any cancellation (agent streams closed, the SUT stopped) and ends with the reason.

The request is process-wide, as the agents are: one said before a session starts ends it at its start.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import AsyncIterator, Callable

__all__ = ["Abandoned", "abandonable", "clear", "request"]


class Abandoned(RuntimeError):
    """The run could not go on; the message says why."""


_lock = threading.Lock()
_reason = ""
_cancels: list[Callable[[], None]] = []  # one per session running now


def request(reason: str) -> None:
    """From any thread: end the running session (or the next one) with Abandoned(reason). The first wins."""
    global _reason
    with _lock:
        if _reason:
            return
        _reason = reason
        cancels = list(_cancels)
    for cancel in cancels:
        cancel()


def clear() -> None:
    """Forget a request (the runs it was about are over)."""
    global _reason
    with _lock:
        _reason = ""


@contextlib.asynccontextmanager
async def abandonable() -> AsyncIterator[None]:
    """Around a session's body, in its task: a request cancels the task and the body ends in Abandoned."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None

    def cancel() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: that session is over
            loop.call_soon_threadsafe(task.cancel)

    with _lock:
        _cancels.append(cancel)
        pending = _reason
    try:
        if pending:
            raise Abandoned(pending)
        yield
    except asyncio.CancelledError:
        if _reason:
            raise Abandoned(_reason) from None
        raise
    finally:
        with _lock:
            _cancels.remove(cancel)
