"""What the pool keeps per agent: its link, its capacity estimate, its in-flight queries by wire id.

The pool (dispatch.py) decides; a slot does the bookkeeping of one agent: taking a query, applying
the agent's step results to the queries in flight there, and letting go of everything on a loss.
"""
from __future__ import annotations

import asyncio
import logging
from array import array
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Protocol

from llmbench.coordinator.mesh.capacity import Capacity
from llmbench.coordinator.mesh.job import Job
from llmbench.coordinator.observe.metrics import AgentCounters
from llmbench.proto import pb

if TYPE_CHECKING:
    from llmbench.coordinator.mesh.dispatch import DispatchConfig

log = logging.getLogger("llmbench.coordinator")


class Link(Protocol):
    address: str
    last_error: str
    reached: bool  # the address answered at least once

    def send(self, queries: list[pb.Query]) -> None: ...
    def close(self) -> None: ...
    async def wait_closed(self) -> None: ...


@dataclass
class AgentSlot:
    address: str
    counters: AgentCounters
    link: Link | None = None
    capacity: Capacity | None = None  # set once the link is ready (first status)
    inflight: dict[int, Job] = field(default_factory=dict)  # wire id -> job
    outbox: list[pb.Query] = field(default_factory=list)
    draining: bool = False  # removed: takes nothing new, closes when empty
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def reached(self) -> bool:
        """The agent answered on the current link (it may not be ready yet)."""
        return self.link is not None and self.link.reached

    def accepts(self, job: Job, cfg: DispatchConfig) -> bool:
        if self.capacity is None or self.draining:
            return False
        return not self.inflight or self.capacity.has_room(job.kv_demand, cfg.overcommit, cfg.max_waiting)

    def take(self, job: Job, wire_id: int) -> None:
        """The job's next attempt runs here under `wire_id`; it goes out with the slot's outbox."""
        assert self.capacity is not None, "take() after accepts(), which needs a capacity"
        self.inflight[wire_id] = job
        self.outbox.append(job.wire_query(wire_id))
        self.capacity.on_sent(job.kv_demand)
        job.attempts += 1
        job.agent = self.address
        self.counters.queries_sent += 1

    def take_tokens(self, step: pb.StepResult, now: float, gaps: array) -> list[Job]:
        """Append the step's tokens to their jobs; returns the jobs that got their first token. Each job
        that had tokens before adds to `gaps` the time since them: its inter-token latency (a message with
        several tokens of one job is one gap)."""
        firsts: list[Job] = []
        # The per-token hot loop: one token per query is the common step, so no slices for it.
        tokens = iter(step.tokens)
        add_gap = gaps.append
        for job, n in zip(map(self.inflight.get, step.ids), step.counts):
            if n == 1:
                token = next(tokens)
                if job is None:
                    continue
                job.tokens.append(token)
            else:
                new = list(islice(tokens, n))
                if job is None or not new:
                    continue
                job.tokens.extend(new)
            last, job.last_token_at = job.last_token_at, now
            if last:
                add_gap(now - last)
            else:
                job.first_token_at = now
                firsts.append(job)
        return firsts

    def take_finishes(self, step: pb.StepResult) -> tuple[list[Job], list[Job]]:
        """Take the step's finished and failed queries off this agent: (done, to retry elsewhere)."""
        done: list[Job] = []
        retry: list[Job] = []
        capacity = self.capacity
        if capacity is None:  # not ready (or detached): nothing can be in flight here
            return done, retry
        for wire_id, reason in zip(step.finished_ids, step.finish_reasons):
            job = self.inflight.pop(wire_id, None)
            if job is None:
                continue
            capacity.on_finished(job.kv_demand)
            if reason == pb.FINISH_REASON_CANCELLED:  # we never cancel: the agent dropped it
                retry.append(job)
            else:
                done.append(job)
        for err in step.errors:
            job = self.inflight.pop(err.id, None)
            if job is None:
                continue
            capacity.on_finished(0)
            problem = f"agent {self.address}: {pb.ErrorCode.Name(err.code)}: {err.message}"
            if err.code == pb.ERROR_CODE_INTERNAL:
                retry.append(job)
                job.error = problem  # kept only if it runs out of attempts
            else:
                job.error = problem
                done.append(job)
        return done, retry

    def detach(self) -> tuple[Link | None, list[Job]]:
        """Let go of the link, the capacity estimate and the queries in flight: (the link, those queries)."""
        link, self.link, self.capacity = self.link, None, None
        self.ready_event.clear()
        jobs = list(self.inflight.values())
        self.inflight.clear()
        self.outbox.clear()
        return link, jobs

    def leave_behind(self, waited: float, connect_timeout_s: float, ready_timeout_s: float, others_up: bool) -> bool:
        """Whether the run starts without this agent, not ready after `waited` s (it keeps being retried);
        raises when the run cannot wait for it any longer and cannot start without it."""
        why = self.link.last_error if self.link is not None else "lost"
        if self.reached and why.startswith(("UNAUTHENTICATED", "PERMISSION_DENIED")):
            raise PermissionError(f"agent {self.address} refused the coordinator ({why}); give the agents' "
                                  "token with --auth-token-file or $LLMBENCH_AUTH_TOKEN")
        if self.reached and why.startswith("TLS handshake failed"):
            raise PermissionError(f"agent {self.address}: {why}")
        if self.reached and waited > ready_timeout_s:
            raise TimeoutError(f"agent {self.address} answers but was not ready after {waited:.0f} s ({why})")
        if self.reached or waited <= connect_timeout_s:
            return False
        if not others_up:
            raise ConnectionError(f"agent {self.address} did not answer within {waited:.0f} s ({why})")
        log.warning("agent %s did not answer within %.0f s (%s): starting without it; it is used as soon as it "
                    "comes up", self.address, waited, why)
        return True
