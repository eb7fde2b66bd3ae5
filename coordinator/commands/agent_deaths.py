"""`llmbench run` watches the agents it started: one that exits is reported at once, whatever the phase.

The coordinator sees only a lost connection, and while an agent is still loading its model it waits
--ready-timeout (15 minutes) for it: an agent OOM-killed there went unreported that long. Here each
agent has a thread waiting on its process; its exit is logged (stderr, and the TUI's log pane) with its
status or signal. The run then goes on where the coordinator can go on without the agent: during the
LoadGen test, while other agents are left, it re-dispatches the agent's queries (exactly once, see
docs/security.md). Before the test (nothing measured yet, and the coordinator would wait for the agent)
or once no agent is left (nothing here restarts one), the run cannot go on, and it ends at once: the
watcher asks the session to give up (run/abandon.py), which then ends in abandon.Abandoned.
"""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from subprocess import Popen
from typing import Protocol, Sequence

from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run import abandon
from llmbench.coordinator.run.exits import BEFORE_LOADGEN

log = logging.getLogger("llmbench.run")
# How an agent ends when it is stopped rather than dies: SIGTERM (0) and Ctrl-C (130). Those signals reach
# `llmbench run` too when they are sent to the process group (a terminal's Ctrl-C, a service manager's stop),
# and ending the run is then its own handler's job, not this watcher's.
STOPPED = (0, 130)


class WatchedAgent(Protocol):
    process: Popen
    log_path: Path
    stopping: bool  # set by whoever stops it: its exit is then no news

    @property
    def name(self) -> str: ...


def exit_reason(returncode: int) -> str:
    """'status 2', or 'killed by SIGKILL (out of memory?)': the kernel's OOM killer sends SIGKILL."""
    if returncode >= 0:
        return f"status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}" + (" (out of memory?)" if -returncode == signal.SIGKILL else "")


def last_line(log_path: Path) -> str:
    """What the agent said last: for an agent that exits with a status, usually why."""
    lines = log_path.read_text(errors="replace").strip().splitlines()[1:]  # the first is run_local's header
    return lines[-1] if lines else "no output"


def how_it_ended(agent: WatchedAgent) -> str:
    code = agent.process.returncode
    return exit_reason(code) + (f" ({last_line(agent.log_path)})" if code > 0 else "")


class DeathWatch:
    """While its `with` block runs, reports each watched agent that exits and ends the run when it cannot
    go on without it."""

    def __init__(self, metrics: RunMetrics) -> None:
        self.metrics = metrics  # its phase says whether the run can go on without an agent
        self.agents: list[WatchedAgent] = []
        self.exited: list[WatchedAgent] = []
        self.lost = ""  # why the run cannot go on, once it cannot
        self._closed = False
        self._lock = threading.Lock()  # __exit__ and the waiting threads: no request once closed

    def __enter__(self) -> DeathWatch:
        abandon.clear()
        return self

    def watch(self, agents: Sequence[WatchedAgent]) -> None:
        """Once they listen (before, start_agents says how one ended): a thread waits on each."""
        self.agents = list(agents)
        for agent in self.agents:
            threading.Thread(target=self._wait, args=(agent,), name=f"watch-{agent.name}", daemon=True).start()

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._closed = True
        abandon.clear()  # a request no session took must not end a later run of this process

    def _wait(self, agent: WatchedAgent) -> None:
        agent.process.wait()
        with self._lock:
            if self._closed or agent.stopping:
                return
            self.exited.append(agent)
            log.error("%s exited: %s; its log: %s", agent.name, how_it_ended(agent), agent.log_path)
            why = self._cannot_go_on(agent)
            if why and not self.lost and not any(a.stopping for a in self.agents):
                self.lost = why
                abandon.request(why)

    def _cannot_go_on(self, agent: WatchedAgent) -> str:
        """Why the run cannot go on after agent's exit; "" when it can (or it was stopped, see STOPPED)."""
        if agent.process.returncode in STOPPED:
            return ""
        reason = exit_reason(agent.process.returncode)
        if self.metrics.phase in BEFORE_LOADGEN:  # also all through --find-peak, whose runs have their own metrics
            return f"{agent.name} exited, {reason},"
        if self.metrics.phase == "loadgen" and len(self.exited) == len(self.agents):
            return f"every local agent exited, the last {agent.name}, {reason},"
        return ""
