"""Decode CUDA graphs' buffer handling (padding, scratch slot, stale rows), checked on CPU.

The real capture needs a GPU; here each "graph" replays the eager forward over the same static
buffers, so everything except the capture itself is exercised: tokens must equal the plain path.
"""
from __future__ import annotations

import threading
import time

import torch

from llmbench.agent.engine.cuda_graphs import DecodeGraphs, graph_batch_sizes
from llmbench.agent.engine.paged import PagedEngine
from llmbench.agent.engine.in_process import generate
from llmbench.agent.engine.types import EngineConfig, Request
from hf_reference import prompts


class EagerReplay:
    def __init__(self, forward, logits: torch.Tensor):
        self.forward, self.logits = forward, logits

    def replay(self) -> None:
        self.logits.copy_(self.forward())


class EagerGraphs(DecodeGraphs):
    def capture(self) -> None:
        for bs in self.sizes:
            args = (self.ids[:bs], self.positions[:bs], self._meta(bs), self.rows[:bs])
            forward = (lambda a: lambda: self.model(*a))(args)
            logits = forward()
            self.graphs[bs] = (EagerReplay(forward, logits), logits)
        self.replayed = []

    def stage(self, seqs):
        self.replayed.append(len(seqs))
        return super().stage(seqs)


def test_graph_batch_sizes_cover_every_batch():
    for max_batch in (1, 5, 32, 100, 512):
        sizes = graph_batch_sizes(max_batch)
        assert sizes == sorted(set(sizes)) and sizes[-1] == max_batch and sizes[0] == 1


def test_decode_graph_path_matches_eager_tokens():
    cfg = EngineConfig(model="tiny", device="cpu", dtype="float32", max_batch=40, max_step_tokens=256,
                       num_kv_blocks=2048)
    reqs = [Request(id=i, prompt=p, max_new_tokens=6 + 5 * (i % 4), ignore_eos=True)
            for i, p in enumerate(prompts(1000, [5 + 37 * i % 200 for i in range(40)], seed=3))]
    # A second wave reuses the blocks of finished queries while the first still decodes.
    wave2 = [Request(id=100 + i, prompt=p, max_new_tokens=12, ignore_eos=True)
             for i, p in enumerate(prompts(1000, [3 + 11 * i for i in range(12)], seed=4))]

    def run_both(engine: PagedEngine) -> dict[int, list[int]]:
        second: dict = {}
        first_done = threading.Event()

        def late() -> None:
            while engine.stats().queries_finished_total < 10 and not first_done.is_set():
                time.sleep(0.001)
            second.update(generate(engine, wave2))

        thread = threading.Thread(target=late)
        thread.start()
        results = generate(engine, reqs)
        first_done.set()
        thread.join()
        return {i: g.tokens for i, g in {**results, **second}.items()}

    plain = PagedEngine(cfg)
    plain.start()
    expected = run_both(plain)
    plain.stop()

    engine = PagedEngine(cfg)
    engine.start()
    runner = engine.runner
    runner.graphs = EagerGraphs(runner.model, 40, -(-runner.max_context // runner.block_size),
                                runner.block_size, scratch_slot=runner.num_blocks * runner.block_size)
    runner.graphs.capture()
    got = run_both(engine)
    engine.stop()
    assert got == expected
    replayed = runner.graphs.replayed
    # Batches shrank as queries finished: padded graphs and stale rows were really exercised.
    assert len(set(replayed)) > 3 and any(n not in runner.graphs.sizes for n in replayed)
