"""A blocking call awaited from asyncio on a daemon thread: one still running (a model loading, LoadGen
after Ctrl-C) must not keep the process alive."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Callable

__all__ = ["in_daemon_thread"]


def in_daemon_thread(fn: Callable[..., Any], *args: Any, name: str) -> asyncio.Future:
    """A future of fn(*args) run on a new daemon thread called name: its result, or its exception."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if not done.done():
            done.set_exception(error) if error is not None else done.set_result(result)

    def work() -> None:
        result, error = None, None
        try:
            result = fn(*args)
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone (an interrupted run): nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=name, daemon=True).start()
    return done
