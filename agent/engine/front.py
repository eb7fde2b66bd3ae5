"""The front every engine shares: thread-safe entry points, the inbox, the query registry, validation,
the step loop's thread, sinks and published stats. An engine adds only how it steps (`_turn`).

Every query is counted exactly once: in the inbox until the engine thread has taken it in and published
the state that holds it, then in that state. Counting bugs fixed in one engine used to stay in the other.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Generic, Sequence, TypeVar

from llmbench.agent.engine.types import (EngineInfo, EngineStats, ErrorCode, FinishReason, Request, Sink,
                                         StepOutput)
from llmbench.agent.engine.validation import request_problem
from llmbench.common.kv import kv_blocks

log = logging.getLogger(__name__)

Q = TypeVar("Q")  # what an engine keeps per live query


class EngineFront(Generic[Q]):
    info: EngineInfo
    thread_name = "llmbench-engine"

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._cond = threading.Condition()
        self._inbox: list[tuple[str, Any, Sink]] = []  # (kind, its payload, sink)
        self._inbox_queries = self._inbox_blocks = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._queries: dict[tuple[Sink, int], Q] = {}  # live queries, engine thread only
        self._step = self._prompt_tokens = self._output_tokens = self._received = self._finished = 0
        self._published: EngineStats | None = None
        # Read by stats() on other threads without the lock: each is one attribute store on the engine
        # thread, so a reader sees the old value or the new one.
        self._step_since: float | None = None  # monotonic start of the turn under way
        self._slowest_step = 0.0

    # ---- what an engine provides ----------------------------------------------------------------
    def _kv(self) -> tuple[int, int, int, int, int]:
        """(blocks total, blocks free, blocks reserved by waiting queries, running, waiting), engine thread."""
        raise NotImplementedError

    def _num_blocks(self) -> int:
        """KV blocks a query may reserve at most (the whole cache)."""
        raise NotImplementedError

    def _accept(self, req: Request, sink: Sink) -> Q:
        """Queues a validated request; returns what the engine keeps for it."""
        raise NotImplementedError

    def _release(self, query: Q) -> None:
        """Frees a live query wherever it is (waiting or running); called once per query."""
        raise NotImplementedError

    def _has_work(self) -> bool:
        raise NotImplementedError

    def _turn(self, out: dict[Sink, StepOutput]) -> None:
        """One step of the loop, its tokens, finishes and errors into out."""
        raise NotImplementedError

    def _thread_started(self) -> None:
        """Per-thread set-up on the engine thread (CUDA: the current device)."""

    # ---- lifecycle ------------------------------------------------------------------------------
    def _start_loop(self) -> None:
        if self._thread is not None:
            raise RuntimeError("engine already started")
        self._publish([])
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def _pause(self, seconds: float) -> bool:
        """Sleeps on the engine thread; returns early, True, if the engine is stopping."""
        with self._cond:
            return self._cond.wait_for(lambda: self._stopping, timeout=max(seconds, 0.0))

    # ---- thread-safe entry points ---------------------------------------------------------------
    def submit(self, requests: Sequence[Request], sink: Sink) -> None:
        requests = list(requests)
        blocks = sum(self.blocks_for(r) for r in requests)
        with self._cond:
            self._inbox.append(("submit", requests, sink))
            self._received += len(requests)
            self._inbox_queries += len(requests)
            self._inbox_blocks += blocks
            self._cond.notify()

    def cancel(self, ids: Sequence[int], sink: Sink) -> None:
        self._post("cancel", list(ids), sink)

    def drop_sink(self, sink: Sink) -> None:
        self._post("drop", None, sink)

    def _post(self, kind: str, payload: Any, sink: Sink) -> None:
        with self._cond:
            self._inbox.append((kind, payload, sink))
            self._cond.notify()

    def stats(self) -> EngineStats:
        """The engine thread's last published state plus the inbox, under one lock: every query is counted
        once, in the inbox or in the engine, even while the engine thread is mid-step."""
        with self._cond:
            s = self._published if self._published is not None else self._engine_side()
            since = self._step_since
            return EngineStats(
                kv_blocks_total=s.kv_blocks_total, kv_blocks_free=s.kv_blocks_free,
                kv_tokens_available=s.kv_tokens_available - self._inbox_blocks * self.block_size,
                running=s.running, waiting=s.waiting + self._inbox_queries, steps_total=s.steps_total,
                prompt_tokens_total=s.prompt_tokens_total, output_tokens_total=s.output_tokens_total,
                queries_received_total=self._received, queries_finished_total=s.queries_finished_total,
                step_running_s=0.0 if since is None else time.monotonic() - since,
                slowest_step_s=self._slowest_step)

    def blocks_for(self, req: Request) -> int:
        """The KV reservation of a query: common.kv's rule, the one the coordinator counts by."""
        return kv_blocks(len(req.prompt), req.max_new_tokens, self.block_size)

    # ---- engine thread --------------------------------------------------------------------------
    def _loop(self) -> None:
        self._thread_started()
        while True:
            with self._cond:
                while not (self._inbox or self._stopping or self._has_work()):
                    self._cond.wait()
                if self._stopping:
                    return
                inbox, self._inbox = self._inbox, []
            out: dict[Sink, StepOutput] = {}
            for kind, payload, sink in inbox:
                if kind == "submit":
                    self._take_in(payload, sink, out)
                elif kind == "cancel":
                    self._cancel(payload, sink, out)
                else:
                    self._drop(sink, out)
            if self._has_work():
                self._step_since = begun = time.monotonic()
                try:
                    self._turn(out)
                except Exception as e:  # a bug outside the forward: fail everything rather than hang
                    log.exception("engine loop failed; failing all queries")
                    self._fail_all(e, out)
                finally:
                    self._stepped(time.monotonic() - begun)
            self._emit(out)
            self._publish([r for kind, payload, _ in inbox if kind == "submit" for r in payload])

    def _stepped(self, seconds: float) -> None:
        """A turn (or the warm-up's step) took seconds: a longer one under way later is slow, not hung."""
        self._slowest_step = max(self._slowest_step, seconds)
        self._step_since = None

    def _engine_side(self) -> EngineStats:
        """The engine thread's own state (read on that thread, or before it starts); inbox not included."""
        total, free, reserved, running, waiting = self._kv()
        return EngineStats(
            kv_blocks_total=total, kv_blocks_free=free, kv_tokens_available=(free - reserved) * self.block_size,
            running=running, waiting=waiting, steps_total=self._step, prompt_tokens_total=self._prompt_tokens,
            output_tokens_total=self._output_tokens, queries_received_total=0,
            queries_finished_total=self._finished)

    def _publish(self, taken_in: list[Request]) -> None:
        """The inbox's queries leave its counts as the engine state that now holds them is published."""
        state = self._engine_side()
        with self._cond:
            self._inbox_queries -= len(taken_in)
            self._inbox_blocks -= sum(self.blocks_for(r) for r in taken_in)
            self._published = state

    def _output(self, out: dict[Sink, StepOutput], sink: Sink) -> StepOutput:
        if sink not in out:
            out[sink] = StepOutput(step=0)
        return out[sink]

    def _take_in(self, requests: list[Request], sink: Sink, out: dict[Sink, StepOutput]) -> None:
        for req in requests:
            try:
                error = self._validate(req, sink)
            except (TypeError, ValueError) as e:
                error = ErrorCode.INVALID_QUERY, f"malformed request: {e}"
            if error is not None:
                self._output(out, sink).errors.append((req.id, *error))
                self._finished += 1
                continue
            self._queries[(sink, req.id)] = self._accept(req, sink)

    def _validate(self, req: Request, sink: Sink) -> tuple[ErrorCode, str] | None:
        if (sink, req.id) in self._queries:
            return ErrorCode.DUPLICATE_ID, f"query id {req.id} is already running on this stream"
        return request_problem(req, self.info.vocab_size, self.info.max_context, self.blocks_for(req),
                               self._num_blocks())

    def _end(self, sink: Sink, qid: int) -> Q | None:
        """Takes a live query out of the registry and frees it; None if it is not live."""
        query = self._queries.pop((sink, qid), None)
        if query is not None:
            self._release(query)
            self._finished += 1
        return query

    def _finished_one(self, sink: Sink, qid: int, out: StepOutput, reason: FinishReason) -> None:
        """A query ended by the engine itself (its length, EOS or a stop id)."""
        out.finished.append((qid, reason))
        self._end(sink, qid)

    def _cancel(self, ids: list[int], sink: Sink, out: dict[Sink, StepOutput]) -> None:
        for qid in ids:
            if self._end(sink, qid) is not None:
                self._output(out, sink).finished.append((qid, FinishReason.CANCELLED))

    def _drop(self, sink: Sink, out: dict[Sink, StepOutput]) -> None:
        for s, qid in [k for k in self._queries if k[0] == sink]:
            self._end(s, qid)
        out.pop(sink, None)

    def _fail(self, queries: list[Q], error: Exception, out: dict[Sink, StepOutput]) -> None:
        keys = {id(q) for q in queries}
        for (sink, qid), q in list(self._queries.items()):
            if id(q) in keys:
                self._end(sink, qid)
                self._output(out, sink).errors.append((qid, ErrorCode.INTERNAL, str(error)))

    def _fail_all(self, error: Exception, out: dict[Sink, StepOutput]) -> None:
        self._fail(list(self._queries.values()), error, out)

    def _emit(self, out: dict[Sink, StepOutput]) -> None:
        for sink, step_output in out.items():
            step_output.step = self._step
            try:
                sink(step_output)
            except Exception:
                log.exception("sink failed; dropping its queries")
                self._drop(sink, {})
