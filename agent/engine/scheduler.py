"""Continuous batching: admission by free KV blocks, decode first, prefill chunks fill the budget.

Admission reserves blocks for prompt + max_new_tokens at once, so a running sequence never runs out
of KV and nothing is ever preempted. MLPerf outputs are short and bounded (128 tokens), so the
reservation costs little, and in exchange there is no recompute waste and no latency cliff when the
cache fills: a query either waits before it starts or runs to the end at full speed.

A step is accounted in two halves so the engine can schedule step N+1 while step N still runs on the
device: advance() moves its sequences on as soon as it is launched (cached tokens, one PENDING token per
sampled row), settle() writes the sampled ids in once the host has them and ends the sequences they
finish. A sequence that an EOS ended at step N may already be in step N+1; that row is dropped.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from llmbench.agent.engine.block_manager import BlockManager
from llmbench.agent.engine.step_budget import HEADROOM, StepBudget
from llmbench.agent.engine.types import FinishReason, Request, Sink

PENDING = -1  # a sampled token the host has not read yet; the runner feeds its value from the device


class Sequence:
    __slots__ = ("sink", "id", "tokens", "prompt_len", "max_new_tokens", "min_new_tokens",
                 "stop_ids", "eos_ids", "tpot_limit_s", "num_blocks", "block_table", "num_cached", "unsettled", "sample_row",
                 "ended")

    def __init__(self, req: Request, sink: Sink, eos_ids: tuple[int, ...], num_blocks: int):
        self.sink = sink
        self.id = req.id
        self.tokens = list(req.prompt)
        self.prompt_len = len(self.tokens)
        self.max_new_tokens = req.max_new_tokens
        self.min_new_tokens = req.min_new_tokens
        self.stop_ids = frozenset(req.stop_ids)
        self.eos_ids = frozenset() if req.ignore_eos else frozenset(eos_ids)
        self.tpot_limit_s = req.tpot_limit_s
        self.num_blocks = num_blocks  # reserved at admission
        self.block_table: list[int] = []
        self.num_cached = 0  # tokens whose K/V are in the cache (or being written by a launched step)
        self.unsettled = 0  # trailing tokens still PENDING
        self.sample_row = -1  # the row of the newest PENDING token among its step's sampled rows
        self.ended = False  # released: rows still in flight for it are dropped

    @property
    def key(self) -> tuple[Sink, int]:
        return self.sink, self.id

    @property
    def num_output(self) -> int:
        return len(self.tokens) - self.prompt_len

    @property
    def prefilling(self) -> bool:
        return self.num_cached < self.prompt_len

    @property
    def decoding(self) -> bool:
        """Takes a decode row next step: prompt cached, output not at its length (PENDING tokens count)."""
        return not self.prefilling and self.num_output < self.max_new_tokens

    def banned_ids(self) -> frozenset[int]:
        """Ids that may not be sampled yet: stop conditions wait for min_new_tokens (as HF and vLLM)."""
        return self.stop_ids | self.eos_ids if self.num_output < self.min_new_tokens else frozenset()

    def settle(self, token: int) -> FinishReason | None:
        """The oldest PENDING token is token; returns why it ends the sequence, if it does."""
        i = len(self.tokens) - self.unsettled
        self.tokens[i] = token
        self.unsettled -= 1
        if token in self.eos_ids:
            reason = FinishReason.EOS
        elif token in self.stop_ids:
            reason = FinishReason.STOP
        elif i + 1 - self.prompt_len >= self.max_new_tokens:
            reason = FinishReason.LENGTH
        else:
            return None
        del self.tokens[i + 1:]  # a token sampled after the end (already in flight) is not output
        self.unsettled = 0
        return reason


@dataclass
class Batch:
    prefill: list[tuple[Sequence, int]] = field(default_factory=list)  # (sequence, chunk length)
    decode: list[Sequence] = field(default_factory=list)
    _sampling: list[Sequence] | None = None

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.prefill) + len(self.decode)

    def sampling(self) -> list[Sequence]:
        """Sequences that get a next token this step, in logits-row order. Fixed at its first call
        (Scheduler.schedule makes it), since advance() moves the prefill chunks it is read from."""
        if self._sampling is None:
            done = [s for s, n in self.prefill if s.num_cached + n == s.prompt_len]
            self._sampling = done + self.decode
        return self._sampling


class Scheduler:
    def __init__(self, blocks: BlockManager, max_batch: int, max_step_tokens: int, tpot_headroom: float = HEADROOM):
        self.blocks = blocks
        # Every running sequence must be able to decode in one step, so running <= the token budget.
        self.max_running = min(max_batch, max_step_tokens)
        self.max_step_tokens = max_step_tokens
        self.budget = StepBudget(max_step_tokens, tpot_headroom)  # the engine feeds it each step's size and wall time
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.waiting_blocks = 0  # reserved by waiting sequences once admitted

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)
        self.waiting_blocks += seq.num_blocks

    def schedule(self) -> Batch:
        batch = Batch(decode=[s for s in self.running if s.decoding])
        limits = [s.tpot_limit_s for s in batch.decode if s.tpot_limit_s > 0]
        budget = self.budget.tokens(len(batch.decode), min(limits, default=0.0)) - len(batch.decode)
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
        batch.sampling()
        return batch

    def advance(self, batch: Batch) -> None:
        """The step is launched: its chunks are cached and each sampled row holds a PENDING token.
        (A later step may overwrite the KV blocks a released sequence owned: the device runs steps in
        launch order, so that step writes them only after this one has read them.)"""
        for seq, n in batch.prefill:
            seq.num_cached += n
        for seq in batch.decode:
            seq.num_cached += 1
        for row, seq in enumerate(batch.sampling()):
            seq.tokens.append(PENDING)
            seq.unsettled += 1
            seq.sample_row = row

    def settle(self, batch: Batch, tokens: list[int]) -> list[tuple[Sequence, int, FinishReason | None]]:
        """An advanced step's sampled ids, in batch.sampling() order, are in. Returns (sequence, token,
        finish reason or None) for the sequences still live; finished ones are released."""
        out = []
        for seq, token in zip(batch.sampling(), tokens):
            if seq.ended:
                continue
            reason = seq.settle(token)
            if reason is not None:
                self.release(seq)
            out.append((seq, token, reason))
        return out

    def update(self, batch: Batch, tokens: list[int]) -> list[tuple[Sequence, int, FinishReason | None]]:
        """advance() and settle() at once, for a step whose tokens are already read."""
        self.advance(batch)
        return self.settle(batch, tokens)

    def release(self, seq: Sequence) -> None:
        """Remove a sequence wherever it is; frees its blocks exactly once (a second call is a no-op)."""
        seq.ended = True
        if seq.block_table:
            self.running.remove(seq)
            self.blocks.free(seq.block_table)
            seq.block_table = []
        elif seq in self.waiting:
            self.waiting.remove(seq)
            self.waiting_blocks -= seq.num_blocks
