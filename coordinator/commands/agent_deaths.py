"""`llmbench run` watches the agents it started: one that exits is reported at once, whatever the phase.

The coordinator sees only a lost connection, and while an agent is still loading its model it waits
--ready-timeout (15 minutes) for it: an agent OOM-killed there went unreported that long. Here each
agent has a thread waiting on its process; its exit is logged (stderr, and the TUI's log pane) with its
status or signal. The run then goes on where the coordinator can go on without the agent: during the
LoadGen test, while other agents are left, it re-dispatches the agent's queries (exactly once, see
docs/security.md). Before the test (nothing measured yet, and the coordinator would wait for the agent)
or once no agent is left (nothing here restarts one), the run cannot go on, and it ends at once: the
watcher signals the main thread, which raises AgentLost wherever it is, as SIGTERM raises Terminated.
"""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from subprocess import Popen
from types import FrameType
from typing import Any, Protocol, Sequence

from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.run.exits import BEFORE_LOADGEN

log = logging.getLogger("llmbench.run")
# How an agent ends when it is stopped rather than dies: SIGTERM (0) and Ctrl-C (130). Those signals reach
# `llmbench run` too when they are sent to the process group (a terminal's Ctrl-C, a service manager's stop),
# and ending the run is then its own handler's job, not this watcher's.
STOPPED = (0, 130)
_WAKE = signal.SIGUSR1


class WatchedAgent(Protocol):
    process: Popen
    log_path: Path
    stopping: bool  # set by whoever stops it: its exit is then no news

    @property
    def name(self) -> str: ...


class AgentLost(KeyboardInterrupt):
    """A local agent exited and the run cannot go on. A KeyboardInterrupt, as exits.Terminated is, so that
    it ends the run from wherever the main thread is: no `except Exception` on the way takes it."""


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
    """While its `with` block runs (entered from the main thread: it takes SIGUSR1), reports each watched
    agent that exits and ends the run when it cannot go on without it."""

    def __init__(self, metrics: RunMetrics) -> None:
        self.metrics = metrics  # its phase says whether the run can go on without an agent
        self.agents: list[WatchedAgent] = []
        self.exited: list[WatchedAgent] = []
        self.lost = ""  # why the run cannot go on, once it cannot
        self._raised = False
        self._closed = False
        self._lock = threading.Lock()  # __exit__ and the waiting threads: no signal once closed
        self._main = threading.get_ident()
        self._previous: Any = None

    def __enter__(self) -> DeathWatch:
        self._previous = signal.signal(_WAKE, self._on_wake)
        return self

    def watch(self, agents: Sequence[WatchedAgent]) -> None:
        """Once they listen (before, start_agents says how one ended): a thread waits on each."""
        self.agents = list(agents)
        for agent in self.agents:
            threading.Thread(target=self._wait, args=(agent,), name=f"watch-{agent.name}", daemon=True).start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop acting on exits and put the previous SIGUSR1 handler back. A wake sent just before must not
        meet the default disposition (it ends the process): blocked, it is taken here if still pending."""
        with self._lock:
            self._closed = True
        signal.pthread_sigmask(signal.SIG_BLOCK, {_WAKE})
        if _WAKE in signal.sigpending():
            signal.sigwait({_WAKE})
        signal.signal(_WAKE, self._previous)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {_WAKE})

    def _wait(self, agent: WatchedAgent) -> None:
        agent.process.wait()
        with self._lock:
            if self._closed or agent.stopping:
                return
            self.exited.append(agent)
            log.error("%s exited: %s; its log: %s", agent.name, how_it_ended(agent), agent.log_path)
            why = self._cannot_go_on(agent)
            if why and not self.lost:
                self.lost = why
                signal.pthread_kill(self._main, _WAKE)

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

    def _on_wake(self, signum: int, frame: FrameType | None) -> None:
        """In the main thread: end the run, unless it is already ending (agents being stopped)."""
        if self.lost and not (self._raised or self._closed or any(a.stopping for a in self.agents)):
            self._raised = True
            raise AgentLost(self.lost)
