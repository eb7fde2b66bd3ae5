"""CUDA graphs for decode-only steps: one graph per padded batch size, replayed over static buffers.

A decode step launches hundreds of small kernels; replaying a captured graph removes their launch
cost and the gaps between them. Padded rows attend to nothing (context length 0) and write their
K/V into a scratch block that no sequence ever owns.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from llmbench.agent.attention import AttentionMetadata
from llmbench.agent.model.llama import LlamaForCausalLM
from llmbench.agent.engine.slots import block_tables, decode_slots

log = logging.getLogger(__name__)


def graph_batch_sizes(max_batch: int) -> list[int]:
    small = [b for b in (1, 2, 4, 8, 16, 24) if b < max_batch]
    return small + list(range(32, max_batch, 32)) + [max_batch]


class DecodeGraphs:
    def __init__(self, model: LlamaForCausalLM, max_batch: int, max_blocks_per_seq: int,
                 block_size: int, scratch_slot: int):
        device = model.embed_tokens.weight.device
        self.model = model
        self.block_size = block_size
        self.sizes = graph_batch_sizes(max_batch)
        self.max_batch = self.sizes[-1]
        n = self.max_batch
        self.ids = torch.zeros(n, dtype=torch.int64, device=device)
        self.positions = torch.zeros(n, dtype=torch.int64, device=device)
        self.slots = torch.full((n,), scratch_slot, dtype=torch.int64, device=device)
        self.context_lens = torch.zeros(n, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(n, max_blocks_per_seq, dtype=torch.int32, device=device)
        self.rows = torch.arange(n, dtype=torch.int64, device=device)
        self.scratch_slot = scratch_slot
        self.pin = device.type == "cuda"
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def _meta(self, bs: int) -> AttentionMetadata:
        return AttentionMetadata(slot_mapping=self.slots[:bs], num_prefill_tokens=0, num_decode_tokens=bs,
                                 context_lens=self.context_lens[:bs],
                                 decode_block_tables=self.block_tables[:bs])

    @torch.inference_mode()
    def capture(self) -> None:
        t = time.perf_counter()
        pool = None
        for bs in reversed(self.sizes):  # largest first, so later graphs fit in its memory pool
            args = (self.ids[:bs], self.positions[:bs], self._meta(bs), self.rows[:bs])
            self.model(*args)  # compiles kernels for this shape outside the capture
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                logits = self.model(*args)
            pool = graph.pool()
            self.graphs[bs] = (graph, logits)
        torch.cuda.synchronize()
        log.info("captured %d decode CUDA graphs (batch 1..%d) in %.1f s", len(self.sizes), self.max_batch,
                 time.perf_counter() - t)

    def fits(self, num_decode: int) -> bool:
        return 0 < num_decode <= self.max_batch

    def stage(self, seqs: list) -> int:
        """Copies seqs' inputs into the static buffers of the smallest graph that holds them; returns
        that graph's batch size for replay()."""
        n = len(seqs)
        bs = next(b for b in self.sizes if b >= n)
        pos, slots = decode_slots(seqs, self.block_size)
        # A fresh pinned buffer per step: the host stages step N+1 while step N's copy may still be queued
        # (torch's pinned allocator reuses a buffer only after the copies that read it have run).
        # One row: ids, positions, slots, context lens (int64).
        staging = torch.empty(4 * n, dtype=torch.int64, pin_memory=self.pin)
        host = staging.numpy()
        host[:n] = np.fromiter((s.tokens[-1] for s in seqs), dtype=np.int64, count=n)
        host[n:2 * n] = pos
        host[2 * n:3 * n] = slots
        host[3 * n:4 * n] = pos + 1  # context lengths
        tables = block_tables(seqs)
        width = tables.shape[1]
        staged = staging.to(self.ids.device, non_blocking=True)
        self.ids[:n].copy_(staged[:n])
        self.positions[:n].copy_(staged[n:2 * n])
        self.slots[:n].copy_(staged[2 * n:3 * n])
        self.context_lens[:n].copy_(staged[3 * n:])
        if bs > n:  # rows left over from a bigger step must attend to nothing
            self.context_lens[n:bs].zero_()
            self.slots[n:bs].fill_(self.scratch_slot)
        tables_t = torch.from_numpy(tables)
        self.block_tables[:n, :width].copy_(tables_t.pin_memory() if self.pin else tables_t, non_blocking=True)
        return bs

    def replay(self, bs: int, n: int) -> torch.Tensor:
        """Runs the graph staged for; returns the logits of its first n rows [n, vocab]."""
        graph, logits = self.graphs[bs]
        graph.replay()
        return logits[:n]
