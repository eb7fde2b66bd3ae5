"""An engine without a model: fake tokens at a set rate, for load-testing the mesh at scale.

It keeps the real engine's contract (validation, KV admission by blocks, max batch, cancellation,
one StepOutput per step per sink) so the coordinator cannot tell the difference except by the
name "simulated", which it reports everywhere. Like greedy decoding, each token is a function of the
whole context so far (a running CRC-32 of prompt and output), so a query resumed elsewhere with its
prompt plus the tokens it already had continues exactly as it would have.
"""
from __future__ import annotations

import array
import sys
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Sequence

from llmbench.agent.engine.step_cost import StepCosts
from llmbench.agent.engine.types import (EngineConfig, EngineInfo, EngineStats, ErrorCode, FinishReason,
                                  Request, Sink, StepOutput)
from llmbench.agent.engine.validation import request_problem
from llmbench.common.kv import kv_blocks

VOCAB_SIZE = 128256  # Llama 3's
EOS_IDS = (128001, 128008, 128009)
MAX_CONTEXT = 131072
NORMAL_TOKENS = 128000  # generated ids stay below the special tokens, so never EOS
DEFAULT_KV_TOKENS_PER_QUERY = 4096  # default cache: max_batch queries of this many tokens


@dataclass
class _Query:
    sink: Sink
    req: Request
    blocks: int
    context_crc: int  # CRC-32 of the context (prompt + output so far) as int32 bytes
    generated: int = 0

    def next_token(self) -> int:
        token = self.context_crc % NORMAL_TOKENS
        self.context_crc = zlib.crc32(token.to_bytes(4, sys.byteorder), self.context_crc)
        return token


class SimulatedEngine:
    def __init__(self, cfg: EngineConfig) -> None:
        if cfg.tokens_per_s <= 0:
            raise ValueError(f"tokens_per_s must be > 0, got {cfg.tokens_per_s}")
        self.cfg = cfg
        self.block_size = cfg.block_size
        max_context = cfg.max_context or MAX_CONTEXT
        self.num_blocks = cfg.num_kv_blocks or cfg.max_batch * -(-DEFAULT_KV_TOKENS_PER_QUERY // cfg.block_size)
        self.info = EngineInfo(name="simulated", dtype="none", device="cpu", vocab_size=VOCAB_SIZE,
                               max_context=max_context, eos_ids=EOS_IDS, parameters=0, engine="simulated",
                               max_batch=cfg.max_batch, max_step_tokens=cfg.max_step_tokens,
                               kv_block_size=cfg.block_size)
        self._lock = threading.Lock()
        self._inbox: list[tuple[str, Sink, object]] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Owned by the engine thread, read under the lock by stats().
        self._queries: dict[tuple[Sink, int], _Query] = {}
        self._waiting: deque[_Query] = deque()
        self._running: list[_Query] = []
        self._free_blocks = self.num_blocks
        self._steps = 0
        self._prompt_total = 0
        self._output_total = 0
        self._received = 0
        self._finished = 0
        self._pending = self._pending_blocks = 0  # submitted, not yet taken in by the engine thread
        self.step_costs = StepCosts()  # stays empty: its steps are paced by a clock, there is nothing to cost

    # --- Engine protocol -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="simulated-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def submit(self, requests: Sequence[Request], sink: Sink) -> None:
        requests = list(requests)
        blocks = sum(self._blocks_for(r) for r in requests)
        with self._lock:  # counted as waiting until the engine thread has taken them in
            self._received += len(requests)
            self._pending += len(requests)
            self._pending_blocks += blocks
        self._post("submit", sink, requests)

    def cancel(self, ids: Sequence[int], sink: Sink) -> None:
        self._post("cancel", sink, list(ids))

    def drop_sink(self, sink: Sink) -> None:
        self._post("drop", sink, None)

    def stats(self) -> EngineStats:
        with self._lock:
            reserved = (sum(q.blocks for q in self._waiting) + self._pending_blocks) * self.block_size
            return EngineStats(kv_blocks_total=self.num_blocks, kv_blocks_free=self._free_blocks,
                               kv_tokens_available=self._free_blocks * self.block_size - reserved,
                               running=len(self._running), waiting=len(self._waiting) + self._pending,
                               steps_total=self._steps, prompt_tokens_total=self._prompt_total,
                               output_tokens_total=self._output_total, queries_received_total=self._received,
                               queries_finished_total=self._finished)

    # --- engine thread ---------------------------------------------------------------------
    def _post(self, kind: str, sink: Sink, payload: object) -> None:
        with self._lock:
            self._inbox.append((kind, sink, payload))
        self._wake.set()

    def _loop(self) -> None:
        due = time.monotonic()
        while not self._stopping.is_set():
            with self._lock:
                inbox, self._inbox = self._inbox, []
                self._wake.clear()
            outs: dict[Sink, StepOutput] = {}
            step = self._steps + 1
            for kind, sink, payload in inbox:
                out = outs.setdefault(sink, StepOutput(step))
                if kind == "submit":
                    for req in payload:
                        self._accept(req, sink, out)
                elif kind == "cancel":
                    for qid in payload:
                        if self._remove(sink, qid):
                            out.finished.append((qid, FinishReason.CANCELLED))
                else:
                    for q in [q for key, q in self._queries.items() if key[0] is sink]:
                        self._remove(sink, q.req.id)
                    outs.pop(sink)
            with self._lock:
                self._admit()
            emitted = self._generate(outs, step)
            outs = {s: o for s, o in outs.items() if o.ids or o.finished or o.errors}
            if outs or emitted:
                with self._lock:
                    self._steps = step
                for sink, out in outs.items():
                    sink(out)
            if self._running or self._waiting:
                # Pace whole steps so the engine's total output is about tokens_per_s.
                due = max(due + emitted / self.cfg.tokens_per_s, time.monotonic() - 0.05)
                self._stopping.wait(max(0.0, due - time.monotonic()))
            else:
                self._wake.wait()
                due = time.monotonic()

    def _accept(self, req: Request, sink: Sink, out: StepOutput) -> None:
        problem = self._validate(req)
        if problem is None and (sink, req.id) in self._queries:
            problem = (ErrorCode.DUPLICATE_ID, f"query id {req.id} is already running on this stream")
        if problem is not None:
            out.errors.append((req.id, *problem))
            with self._lock:
                self._finished += 1
                self._taken_in(req)
            return
        prompt = array.array("i", req.prompt)
        q = _Query(sink, req, self._blocks_for(req), zlib.crc32(prompt.tobytes()))
        self._queries[(sink, req.id)] = q
        with self._lock:
            self._waiting.append(q)
            self._taken_in(req)

    def _taken_in(self, req: Request) -> None:
        """Under the lock, as the query becomes waiting or finished: it stops counting as pending."""
        self._pending -= 1
        self._pending_blocks -= self._blocks_for(req)

    def _validate(self, req: Request) -> tuple[ErrorCode, str] | None:
        return request_problem(req, VOCAB_SIZE, self.info.max_context, self._blocks_for(req), self.num_blocks)

    def _blocks_for(self, req: Request) -> int:
        return kv_blocks(len(req.prompt), req.max_new_tokens, self.block_size)

    def _remove(self, sink: Sink, qid: int) -> bool:
        q = self._queries.pop((sink, qid), None)
        if q is None:
            return False
        with self._lock:
            if q in self._running:
                self._running.remove(q)
                self._free_blocks += q.blocks
            else:
                self._waiting.remove(q)
            self._finished += 1
        return True

    def _admit(self) -> None:
        """FIFO admission reserving prompt + max output, under the batch and prefill-token limits."""
        budget = self.cfg.max_step_tokens
        while self._waiting and len(self._running) < self.cfg.max_batch:
            q = self._waiting[0]
            n = len(q.req.prompt)
            if q.blocks > self._free_blocks or (n > budget and budget < self.cfg.max_step_tokens):
                break
            self._waiting.popleft()
            self._free_blocks -= q.blocks
            self._running.append(q)
            self._prompt_total += n
            budget -= n

    def _generate(self, outs: dict[Sink, StepOutput], step: int) -> int:
        done: list[_Query] = []
        for q in self._running:
            token = q.next_token()
            q.generated += 1
            out = outs.get(q.sink)
            if out is None:
                out = outs[q.sink] = StepOutput(step)
            out.ids.append(q.req.id)
            out.counts.append(1)
            out.tokens.append(token)
            req = q.req
            if q.generated >= req.max_new_tokens:
                reason = FinishReason.LENGTH
            elif not req.ignore_eos and q.generated >= req.min_new_tokens and token in req.stop_ids:
                reason = FinishReason.STOP
            else:
                continue
            out.finished.append((req.id, reason))
            done.append(q)
        emitted = len(self._running)
        for q in done:
            self._remove(q.sink, q.req.id)
        with self._lock:
            self._output_total += emitted
        return emitted
