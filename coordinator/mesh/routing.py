"""Which agent takes the next query, in O(log agents) per query (the rule: dispatch.py; AgentSlot.accepts).

A heap ranks the ready agents by (most estimated free KV, fewest queries so far, first added). An agent
gets a fresh entry whenever its estimate changes (`changed`); entries that are no longer an agent's
latest are dropped when they surface. When no agent takes the query at the head of the queue, the
queue is blocked: every agent just said no, so from then on only agents whose estimate has changed
since (a finish, a status report, the last query they took) are asked, until the queue drains. A
blocked queue thus costs a look at the few agents that changed, not at all of them.
"""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmbench.coordinator.mesh.agent_slot import AgentSlot
    from llmbench.coordinator.mesh.dispatch import DispatchConfig
    from llmbench.coordinator.mesh.job import Job

Entry = tuple[int, int, int, "AgentSlot"]  # (-free KV tokens, queries sent, order added, slot)


class Router:
    def __init__(self, cfg: DispatchConfig) -> None:
        self.cfg = cfg
        self._heap: list[Entry] = []
        self._latest: dict[str, Entry] = {}  # address -> the ready agent's current entry
        self._order: dict[str, int] = {}
        self._dirty: dict[str, AgentSlot] = {}  # changed since the queue blocked
        self._blocked = False

    def changed(self, slot: AgentSlot) -> None:
        """The slot's estimate, query count or readiness changed."""
        address = slot.address
        if slot.capacity is None or slot.draining:
            self._latest.pop(address, None)
            self._dirty.pop(address, None)
            return
        order = self._order.setdefault(address, len(self._order))
        entry = (-slot.capacity.free_tokens(), slot.counters.queries_sent, order, slot)
        self._latest[address] = entry
        self._dirty[address] = slot
        heapq.heappush(self._heap, entry)
        if len(self._heap) > 2 * len(self._latest) + 64:  # shed entries that are no longer anyone's latest
            self._heap = list(self._latest.values())
            heapq.heapify(self._heap)

    def pick(self, job: Job) -> AgentSlot | None:
        """The agent for `job`, or None: then the queue is blocked behind it."""
        if self._blocked:  # agents that said no are not asked again until they change
            self._dirty = {a: s for a, s in self._dirty.items() if s.accepts(job, self.cfg)}
            return min(self._latest[a] for a in self._dirty)[3] if self._dirty else None
        passed: list[Entry] = []
        found = None
        while self._heap:
            entry = self._heap[0]
            slot = entry[3]
            if self._latest.get(slot.address) is not entry:
                heapq.heappop(self._heap)
            elif slot.accepts(job, self.cfg):
                found = slot
                break
            else:
                passed.append(heapq.heappop(self._heap))
        for entry in passed:
            heapq.heappush(self._heap, entry)
        if found is None:
            self._blocked = True
            self._dirty.clear()
        return found

    def drained(self) -> None:
        """The queue is empty: the next query asks every agent again."""
        self._blocked = False
