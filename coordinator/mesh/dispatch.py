"""The agent pool: routes each query to the agent with the most free capacity, re-dispatches on loss.

Everything here runs on the coordinator's asyncio loop. Agents come and go at run time
(`add_agent`/`remove_agent`); a lost agent's address is reconnected in the background unless removed.

Routing: queries wait in one central FIFO. Each loop turn (`_pump`) takes queries from its head and
gives each to the ready agent with the most estimated free KV tokens (see capacity.py) that can take
it: its free tokens minus the query's demand (prompt + max_new_tokens) stay above -slack (a bounded
overcommit, `overcommit` x its KV size, so its waiting queue is not empty while there is work) and
fewer than `max_waiting` queries wait there. An agent with nothing in flight always takes one, so a
query bigger than every estimate still runs (or gets the agent's TOO_LONG). What each agent got in
one turn goes out as one QueryBatch.

Re-dispatch: every attempt has a fresh wire id, so results of an abandoned attempt are never
mistaken for another. When an agent is lost, its in-flight queries go back to the head of the queue
and continue elsewhere from where they stopped: the new prompt is the original prompt plus the
tokens already received, asking for the remaining tokens. Greedy decoding makes this the output of
an uninterrupted run (up to the numerics of batching), the first token (already reported to
LoadGen) stays the first token of the data, and each query is completed once, with its whole output.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

from llmbench.coordinator.mesh.agent_slot import AgentSlot, Link
from llmbench.coordinator.mesh.capacity import Capacity
from llmbench.coordinator.mesh.job import Job
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.coordinator.mesh.routing import Router
from llmbench.proto import pb

log = logging.getLogger("llmbench.coordinator")


class Listener(Protocol):
    def first_tokens(self, jobs: list[Job]) -> None: ...
    def completed(self, jobs: list[Job]) -> None: ...


LinkFactory = Callable[[str, "Pool"], Link]


@dataclass
class DispatchConfig:
    overcommit: float = 0.05  # share of an agent's KV that may be promised beyond its free KV
    max_waiting: int = 0  # most queries waiting at one agent; 0: max(4, its max_batch // 8)
    max_attempts: int = 4  # attempts per query (agent losses, internal errors) before it fails
    reconnect_s: float = 1.0  # delay before reconnecting a lost agent


class Pool:
    def __init__(self, link_factory: LinkFactory, metrics: RunMetrics, cfg: DispatchConfig | None = None) -> None:
        self.link_factory = link_factory
        self.metrics = metrics
        self.cfg = cfg or DispatchConfig()
        self.listener: Listener | None = None
        self.slots: dict[str, AgentSlot] = {}
        self.queue: deque[Job] = deque()
        self.router = Router(self.cfg)
        self._next_wire_id = 0
        self._pump_scheduled = False
        self._closed = False
        self.failed = ""  # set by fail_all
        self.gave_up = ""  # set when the run gives up for want of agents (session.watch_agents)
        self._failures = 0
        self._waited_ready = False  # wait_ready returned: the session has said which agents are ready

    # --- membership ----------------------------------------------------------------------------
    def add_agent(self, address: str) -> None:
        slot = self.slots.get(address)
        if slot is not None:
            slot.draining = False  # re-added while draining: keep it
            self.router.changed(slot)
            return
        slot = self.slots[address] = AgentSlot(address, self.metrics.agent(address))
        slot.counters.state = "connecting"
        slot.link = self.link_factory(address, self)

    def remove_agent(self, address: str, drain: bool = True) -> None:
        """drain: let in-flight queries finish there; otherwise move them to other agents now."""
        slot = self.slots.get(address)
        if slot is None:
            return
        slot.draining = True
        slot.counters.state = "draining"
        self.router.changed(slot)
        if not drain or not slot.inflight or slot.link is None:
            self._drop(slot, "removed", forget=True)

    def ready_agents(self) -> list[AgentSlot]:
        return [s for s in self.slots.values() if s.capacity is not None and not s.draining]

    def busy(self, link: Link) -> bool:
        """Whether queries are in flight on this link (its agent owes us step results)."""
        slot = self._slot(link)
        return slot is not None and bool(slot.inflight)

    # --- jobs ----------------------------------------------------------------------------------
    def submit(self, jobs: list[Job]) -> None:
        if self.failed:
            for job in jobs:
                job.error = self.failed
            self._complete(jobs)
            return
        self.queue.extend(jobs)
        self.metrics.queued = len(self.queue)
        self._schedule_pump()

    def fail_all(self, reason: str) -> None:
        """Answer every queued and in-flight query, and all later ones, as failed (the run cannot go on)."""
        self.failed = reason
        jobs = list(self.queue)
        self.queue.clear()
        self.metrics.queued = 0
        for slot in self.slots.values():
            jobs.extend(slot.inflight.values())
            slot.inflight.clear()
            self.metrics.record_inflight(slot.counters, 0)
        for job in jobs:
            job.error = job.error or reason
        self._complete(jobs)

    # --- link callbacks -------------------------------------------------------------------------
    def on_ready(self, link: Link, status: pb.AgentStatus) -> None:
        slot = self._slot(link)
        if slot is None:
            return
        slot.capacity = Capacity(status)
        self.metrics.record_status(slot.counters, status)
        slot.counters.state = "draining" if slot.draining else "ready"
        slot.ready_event.set()
        self.router.changed(slot)
        # Before wait_ready returns the session names each ready agent; from then on (a late agent, one
        # reconnected) only this line does.
        log.log(logging.INFO if self._waited_ready else logging.DEBUG, "agent %s ready: %s (%s engine) on %s, "
                "%d KV tokens", link.address, status.model.name, status.model.engine, status.model.device,
                slot.capacity.kv_tokens_total)
        self._schedule_pump()

    def on_status(self, link: Link, status: pb.AgentStatus) -> None:
        slot = self._slot(link)
        if slot is None or slot.capacity is None:
            return
        slot.capacity.on_status(status)
        self.metrics.record_status(slot.counters, status)
        slot.counters.est_free_tokens = slot.capacity.free_tokens()
        self.router.changed(slot)
        self._schedule_pump()

    def on_step(self, link: Link, step: pb.StepResult) -> None:
        slot = self._slot(link)
        if slot is None:
            return
        firsts = slot.take_tokens(step, time.monotonic(), self.metrics.itl)
        self.metrics.record_tokens(slot.counters, len(step.tokens))
        done, retry = slot.take_finishes(step)
        self.metrics.record_inflight(slot.counters, len(slot.inflight))
        if firsts and self.listener is not None:
            self.listener.first_tokens(firsts)
        if retry:
            self._requeue(retry)
        if done:
            self._complete(done)
        if done or retry:  # KV came back; a step of tokens alone changes no capacity estimate
            self.router.changed(slot)
            self._schedule_pump()
        if slot.draining and not slot.inflight:
            self._drop(slot, "removed", forget=True)

    def on_lost(self, link: Link, reason: str) -> None:
        slot = self._slot(link)
        if slot is None:
            return
        log.warning("agent %s lost: %s; re-dispatching its %d in-flight queries", slot.address, reason,
                    len(slot.inflight))
        slot.counters.losses += 1
        slot.counters.last_error = reason
        self._drop(slot, "lost", forget=slot.draining)
        if not slot.draining:
            asyncio.get_running_loop().call_later(self.cfg.reconnect_s, self._reconnect, slot)

    # --- internals ------------------------------------------------------------------------------
    def _slot(self, link: Link) -> AgentSlot | None:
        slot = self.slots.get(link.address)
        return slot if slot is not None and slot.link is link else None

    def _reconnect(self, slot: AgentSlot) -> None:
        if self._closed or self.slots.get(slot.address) is not slot or slot.link is not None:
            return
        slot.counters.state = "connecting"
        slot.link = self.link_factory(slot.address, self)

    def _drop(self, slot: AgentSlot, state: str, forget: bool) -> None:
        """Close the slot's link and move its in-flight queries to other agents."""
        link, jobs = slot.detach()
        self.router.changed(slot)
        if link is not None:
            link.close()
        self.metrics.record_inflight(slot.counters, 0)
        slot.counters.state = state
        if jobs:
            self.metrics.record_redispatched(slot.counters, len(jobs))
            self._requeue(jobs)
        if forget:
            self.slots.pop(slot.address, None)
        self._schedule_pump()

    def _requeue(self, jobs: list[Job]) -> None:
        retry: list[Job] = []
        finish: list[Job] = []
        for job in jobs:
            if len(job.tokens) >= job.max_new_tokens:  # every token arrived, only the finish was lost
                job.error = ""
                finish.append(job)
            elif job.attempts >= self.cfg.max_attempts:
                job.error = job.error or f"gave up after {job.attempts} attempts"
                finish.append(job)
            else:
                retry.append(job)
        self.queue.extendleft(reversed(retry))
        self.metrics.queued = len(self.queue)
        if finish:
            self._complete(finish)

    def _complete(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        for job in jobs:
            job.done_at = now
            self.metrics.record_completed(self.metrics.agents.get(job.agent), job.ttft_s, job.tpot_s,
                                          ok=not job.error, e2e_s=job.e2e_s)
            if job.error:
                self._failures += 1
                if self._failures <= 5 or self._failures % 100 == 0:
                    log.error("query for sample %d failed (%d failures so far): %s", job.index, self._failures,
                              job.error)
        if self.listener is not None:
            self.listener.completed(jobs)

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled and not self._closed:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        fed: dict[str, AgentSlot] = {}
        now = time.monotonic()
        while self.queue:
            job = self.queue[0]
            slot = self.router.pick(job)
            if slot is None:
                break  # no agent takes the head of the queue: everything waits behind it
            self.queue.popleft()
            self._next_wire_id += 1
            slot.take(job, self._next_wire_id)
            if job.attempts == 1:  # first sends: the wait from LoadGen's issue to an agent
                self.metrics.record_queue_wait(now - job.issued_at)
            self.router.changed(slot)
            fed[slot.address] = slot
        if not self.queue:
            self.router.drained()
        self.metrics.queued = len(self.queue)
        for slot in fed.values():
            if slot.outbox:
                assert slot.link is not None and slot.capacity is not None  # the router picks ready slots only
                slot.link.send(slot.outbox)
                slot.outbox = []
                self.metrics.record_inflight(slot.counters, len(slot.inflight))
                slot.counters.est_free_tokens = slot.capacity.free_tokens()

    async def wait_ready(self, connect_timeout_s: float, ready_timeout_s: float) -> None:
        """Wait until every agent added so far is ready. One that has not answered within
        connect_timeout_s is left behind with a warning if another agent is up (it keeps being
        retried and gets work once it comes up); otherwise raise naming the ones that are not ready."""
        start = time.monotonic()
        left_behind: set[str] = set()
        while True:
            pending = [s for s in self.slots.values() if not s.ready_event.is_set() and s.address not in left_behind]
            if not pending and self.ready_agents():
                self._waited_ready = True
                return
            waited = time.monotonic() - start
            others_up = any(s.ready_event.is_set() or s.reached for s in self.slots.values())
            left_behind.update(s.address for s in pending
                               if s.leave_behind(waited, connect_timeout_s, ready_timeout_s, others_up))
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._closed = True
        links = [s.link for s in self.slots.values() if s.link is not None]
        for link in links:
            link.close()
        await asyncio.gather(*(link.wait_closed() for link in links))
