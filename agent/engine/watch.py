"""Is the engine healthy? It is while it steps whenever it has work.

Measured from outside through `Engine.stats()` (cheap, thread-safe, the same for every engine): work
waiting or running and `steps_total` unchanged for `stall_s` means a hung kernel or a dead engine
thread, unless a step is under way that is not yet overdue (`common.stall`: a slow device is not a
hung one). The agent turns health NOT_SERVING and withholds its systemd watchdog pings meanwhile.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from llmbench.agent.engine.types import Engine
from llmbench.common.stall import hung

log = logging.getLogger("llmbench.agent")
DEFAULT_STALL_S = 60.0
CHECK_S = 0.5


async def watch_engine(engine: Engine, stall_s: float, on_change: Callable[[bool], Awaitable[None]]) -> None:
    """Call on_change(healthy) whenever the verdict flips (it starts healthy); runs until cancelled."""
    healthy = True
    steps, since = -1, time.monotonic()
    while True:
        s = engine.stats()
        now = time.monotonic()
        if s.steps_total != steps or not (s.running or s.waiting):
            steps, since = s.steps_total, now
        why = s.unavailable or hung(now - since, s.step_running_s, s.slowest_step_s, stall_s)
        if (why is None) != healthy:
            healthy = not healthy
            if healthy:
                log.warning("engine steps again: SERVING")
            else:
                log.error("%s; %d queries running, %d waiting: NOT_SERVING", why, s.running, s.waiting)
            await on_change(healthy)
        await asyncio.sleep(min(CHECK_S, stall_s / 4))
