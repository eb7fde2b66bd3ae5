"""Continuous batching: admission by free KV blocks, decode first, prefill chunks fill the budget.

Admission reserves blocks for prompt + max_new_tokens at once, so a running sequence never runs out
of KV and nothing is ever preempted. MLPerf outputs are short and bounded (128 tokens), so the
reservation costs little, and in exchange there is no recompute waste and no latency cliff when the
cache fills: a query either waits before it starts or runs to the end at full speed.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from llmbench.agent.block_manager import BlockManager
from llmbench.agent.types import FinishReason, Request, Sink


class Sequence:
    __slots__ = ("sink", "id", "tokens", "prompt_len", "max_new_tokens", "min_new_tokens",
                 "stop_ids", "eos_ids", "num_blocks", "block_table", "num_cached")

    def __init__(self, req: Request, sink: Sink, eos_ids: tuple[int, ...], num_blocks: int):
        self.sink = sink
        self.id = req.id
        self.tokens = list(req.prompt)
        self.prompt_len = len(self.tokens)
        self.max_new_tokens = req.max_new_tokens
        self.min_new_tokens = req.min_new_tokens
        self.stop_ids = frozenset(req.stop_ids)
        self.eos_ids = frozenset() if req.ignore_eos else frozenset(eos_ids)
        self.num_blocks = num_blocks  # reserved at admission
        self.block_table: list[int] = []
        self.num_cached = 0  # tokens whose K/V are in the cache

    @property
    def key(self) -> tuple[Sink, int]:
        return self.sink, self.id

    @property
    def num_output(self) -> int:
        return len(self.tokens) - self.prompt_len

    @property
    def prefilling(self) -> bool:
        return self.num_cached < self.prompt_len

    def banned_ids(self) -> frozenset[int]:
        """Ids that may not be sampled yet: stop conditions wait for min_new_tokens (as HF and vLLM)."""
        return self.stop_ids | self.eos_ids if self.num_output < self.min_new_tokens else frozenset()

    def append(self, token: int) -> FinishReason | None:
        self.tokens.append(token)
        if token in self.eos_ids:
            return FinishReason.EOS
        if token in self.stop_ids:
            return FinishReason.STOP
        if self.num_output >= self.max_new_tokens:
            return FinishReason.LENGTH
        return None


@dataclass
class Batch:
    prefill: list[tuple[Sequence, int]] = field(default_factory=list)  # (sequence, chunk length)
    decode: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.prefill) + len(self.decode)

    def sampling(self) -> list[Sequence]:
        """Sequences that get a next token this step, in logits-row order."""
        done = [s for s, n in self.prefill if s.num_cached + n == s.prompt_len]
        return done + self.decode


class Scheduler:
    def __init__(self, blocks: BlockManager, max_batch: int, max_step_tokens: int):
        self.blocks = blocks
        # Every running sequence must be able to decode in one step, so running <= the token budget.
        self.max_running = min(max_batch, max_step_tokens)
        self.max_step_tokens = max_step_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.waiting_blocks = 0  # reserved by waiting sequences once admitted

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)
        self.waiting_blocks += seq.num_blocks

    def schedule(self) -> Batch:
        batch = Batch(decode=[s for s in self.running if not s.prefilling])
        budget = self.max_step_tokens - len(batch.decode)
        for seq in self.running:
            if budget == 0:
                break
            if seq.prefilling:
                n = min(budget, seq.prompt_len - seq.num_cached)
                batch.prefill.append((seq, n))
                budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.max_running:
            seq = self.waiting[0]
            if not self.blocks.can_allocate(seq.num_blocks):
                break  # first come, first served: no overtaking by smaller queries
            self.waiting.popleft()
            self.waiting_blocks -= seq.num_blocks
            seq.block_table = self.blocks.allocate(seq.num_blocks)
            self.running.append(seq)
            n = min(budget, seq.prompt_len)
            batch.prefill.append((seq, n))
            budget -= n
        return batch

    def update(self, batch: Batch, tokens: list[int]) -> list[tuple[Sequence, int, FinishReason | None]]:
        """Account a finished step: tokens are the sampled ids in batch.sampling() order.
        Returns (sequence, token, finish reason or None); finished sequences are released."""
        sampling = batch.sampling()
        for seq, n in batch.prefill:
            seq.num_cached += n
        for seq in batch.decode:
            seq.num_cached += 1
        out = []
        for seq, token in zip(sampling, tokens):
            reason = seq.append(token)
            if reason is not None:
                self.release(seq)
            out.append((seq, token, reason))
        return out

    def release(self, seq: Sequence) -> None:
        """Remove a sequence wherever it is; frees its blocks exactly once (a second call is a no-op)."""
        if seq.block_table:
            self.running.remove(seq)
            self.blocks.free(seq.block_table)
            seq.block_table = []
        elif seq in self.waiting:
            self.waiting.remove(seq)
            self.waiting_blocks -= seq.num_blocks
