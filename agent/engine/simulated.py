"""An engine without a model: fake tokens at a set rate, for load-testing the mesh at scale.

It keeps the real engine's contract (the shared front: validation, KV admission by blocks, max batch,
cancellation, one StepOutput per step per sink) so the coordinator cannot tell the difference except by
the name "simulated", which it reports everywhere. Like greedy decoding, each token is a function of the
whole context so far (a running CRC-32 of prompt and output), so a query resumed elsewhere with its
prompt plus the tokens it already had continues exactly as it would have.
"""
from __future__ import annotations

import array
import sys
import time
import zlib
from collections import deque
from dataclasses import dataclass

from llmbench.agent.engine.front import EngineFront
from llmbench.agent.engine.step_cost import StepCosts
from llmbench.agent.engine.types import EngineConfig, EngineInfo, FinishReason, Request, Sink, StepOutput

VOCAB_SIZE = 128256  # Llama 3's
EOS_IDS = (128001, 128008, 128009)
MAX_CONTEXT = 131072
NORMAL_TOKENS = 128000  # generated ids stay below the special tokens, so never EOS
DEFAULT_KV_TOKENS_PER_QUERY = 4096  # default cache: max_batch queries of this many tokens


@dataclass(eq=False)
class _Query:
    sink: Sink
    req: Request
    blocks: int
    context_crc: int  # CRC-32 of the context (prompt + output so far) as int32 bytes
    generated: int = 0
    running: bool = False

    def next_token(self) -> int:
        token = self.context_crc % NORMAL_TOKENS
        self.context_crc = zlib.crc32(token.to_bytes(4, sys.byteorder), self.context_crc)
        return token


class SimulatedEngine(EngineFront[_Query]):
    thread_name = "simulated-engine"

    def __init__(self, cfg: EngineConfig) -> None:
        if cfg.tokens_per_s <= 0:
            raise ValueError(f"tokens_per_s must be > 0, got {cfg.tokens_per_s}")
        super().__init__(cfg.block_size)
        self.cfg = cfg
        max_context = cfg.max_context or MAX_CONTEXT
        self.num_blocks = cfg.num_kv_blocks or cfg.max_batch * -(-DEFAULT_KV_TOKENS_PER_QUERY // cfg.block_size)
        self.info = EngineInfo(name="simulated", dtype="none", device="cpu", vocab_size=VOCAB_SIZE,
                               max_context=max_context, eos_ids=EOS_IDS, parameters=0, engine="simulated",
                               max_batch=cfg.max_batch, max_step_tokens=cfg.max_step_tokens,
                               kv_block_size=cfg.block_size)
        self._waiting: deque[_Query] = deque()
        self._waiting_blocks = 0
        self._running: list[_Query] = []
        self._free_blocks = self.num_blocks
        self._due: float | None = None  # when the next step may run (None: idle, the next one runs at once)
        self.step_costs = StepCosts()  # stays empty: its steps are paced by a clock, there is nothing to cost

    def start(self) -> None:
        self._start_loop()

    # ---- the front's hooks -----------------------------------------------------------------------
    def _kv(self) -> tuple[int, int, int, int, int]:
        return self.num_blocks, self._free_blocks, self._waiting_blocks, len(self._running), len(self._waiting)

    def _num_blocks(self) -> int:
        return self.num_blocks

    def _accept(self, req: Request, sink: Sink) -> _Query:
        q = _Query(sink, req, self.blocks_for(req), zlib.crc32(array.array("i", req.prompt).tobytes()))
        self._waiting.append(q)
        self._waiting_blocks += q.blocks
        return q

    def _release(self, q: _Query) -> None:
        if q.running:
            self._running.remove(q)
            self._free_blocks += q.blocks
        else:
            self._waiting.remove(q)
            self._waiting_blocks -= q.blocks

    def _has_work(self) -> bool:
        return bool(self._running or self._waiting)

    def _turn(self, out: dict[Sink, StepOutput]) -> None:
        """One step, paced so the engine's total output is about tokens_per_s."""
        if self._due is not None and self._pause(self._due - time.monotonic()):
            return  # stopping
        self._admit()
        emitted = self._generate(out)
        now = time.monotonic()
        if self._running or self._waiting:
            self._due = max((self._due or now) + emitted / self.cfg.tokens_per_s, now - 0.05)
        else:
            self._due = None

    # ---- its steps -------------------------------------------------------------------------------
    def _admit(self) -> None:
        """FIFO admission reserving prompt + max output, under the batch and prefill-token limits."""
        budget = self.cfg.max_step_tokens
        while self._waiting and len(self._running) < self.cfg.max_batch:
            q = self._waiting[0]
            n = len(q.req.prompt)
            if q.blocks > self._free_blocks or (n > budget and budget < self.cfg.max_step_tokens):
                break
            self._waiting.popleft()
            self._waiting_blocks -= q.blocks
            self._free_blocks -= q.blocks
            q.running = True
            self._running.append(q)
            self._prompt_tokens += n
            budget -= n

    def _generate(self, outs: dict[Sink, StepOutput]) -> int:
        done: list[tuple[_Query, StepOutput, FinishReason]] = []
        for q in self._running:
            token = q.next_token()
            q.generated += 1
            out = self._output(outs, q.sink)
            out.ids.append(q.req.id)
            out.counts.append(1)
            out.tokens.append(token)
            req = q.req
            if q.generated >= req.max_new_tokens:
                done.append((q, out, FinishReason.LENGTH))
            elif not req.ignore_eos and q.generated >= req.min_new_tokens and token in req.stop_ids:
                done.append((q, out, FinishReason.STOP))
        emitted = len(self._running)
        for q, out, reason in done:
            self._finished_one(q.sink, q.req.id, out, reason)
        if emitted:
            self._step += 1
            self._output_tokens += emitted
        return emitted
