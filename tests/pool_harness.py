"""The dispatch pool against fake agent links: status reports as agents send them, links that record
what the pool sends, a listener that records what it answers, jobs, and one turn of the event loop."""
from __future__ import annotations

import asyncio

import numpy as np

from llmbench.coordinator.mesh.dispatch import DispatchConfig, Pool
from llmbench.coordinator.mesh.job import Job
from llmbench.coordinator.observe.metrics import RunMetrics
from llmbench.proto import pb


def status(kv_free: int, received: int = 0, finished: int = 0, waiting: int = 0, blocks: int = 1000,
           max_batch: int = 64, running: int = 0) -> pb.AgentStatus:
    return pb.AgentStatus(kv_tokens_available=kv_free, queries_received_total=received,
                          queries_finished_total=finished, waiting=waiting, running=running, kv_block_size=16,
                          kv_blocks_total=blocks, max_batch=max_batch, ready=True,
                          model=pb.ModelInfo(name="fake", vocab_size=1000, max_context=4096))


class FakeLink:
    def __init__(self, address: str, pool: Pool) -> None:
        self.address = address
        self.pool = pool
        self.reached = False
        self.last_error = "not started"
        self.sent: list[list[pb.Query]] = []
        self.closed = False

    def send(self, queries):
        self.sent.append(list(queries))

    def close(self):
        self.closed = True

    async def wait_closed(self):
        pass

    @property
    def queries(self) -> list[pb.Query]:
        return [q for batch in self.sent for q in batch]

    def step(self, ids_tokens: dict[int, list[int]], finished: tuple[int, ...] = (),
             errors: tuple[pb.QueryError, ...] = ()) -> None:
        tokens = [t for toks in ids_tokens.values() for t in toks]
        self.pool.on_step(self, pb.StepResult(ids=list(ids_tokens), counts=[len(t) for t in ids_tokens.values()],
                                              tokens=tokens, finished_ids=list(finished),
                                              finish_reasons=[pb.FINISH_REASON_LENGTH] * len(finished),
                                              errors=list(errors)))


class Recorder:
    def __init__(self) -> None:
        self.firsts: list[int] = []
        self.done: dict[int, Job] = {}
        self.completions = 0

    def first_tokens(self, jobs):
        self.firsts += [j.sample_id for j in jobs]

    def completed(self, jobs):
        self.completions += len(jobs)
        for j in jobs:
            assert j.sample_id not in self.done, "completed twice"
            self.done[j.sample_id] = j


def make_pool(cfg: DispatchConfig | None = None) -> tuple[Pool, dict[str, FakeLink], Recorder]:
    links: dict[str, FakeLink] = {}

    def factory(address, pool):
        links[address] = FakeLink(address, pool)
        return links[address]
    pool = Pool(factory, RunMetrics(), cfg or DispatchConfig(reconnect_s=3600))
    rec = Recorder()
    pool.listener = rec
    return pool, links, rec


def jobs(n: int, prompt_len: int = 100, max_new: int = 29, start: int = 0) -> list[Job]:
    """Each needs 128 KV tokens by default (100 prompt + 29 new - 1: the last is never fed back)."""
    return [Job(sample_id=start + i, index=start + i, prompt=np.arange(1, prompt_len + 1, dtype=np.int32),
                max_new_tokens=max_new) for i in range(n)]


async def turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)
