"""PagedEngine: the step loop on its own thread, fed through a thread-safe inbox."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Sequence as Seq

import torch

from llmbench.agent.attention import select_backend
from llmbench.agent.engine.block_manager import BlockManager
from llmbench.agent.model.loader import (build_model, check_quantization, resolve_device, resolve_dtype,
                                   resolve_kv_dtype, resolve_source)
from llmbench.agent.engine.runner import Launched, ModelRunner, plan_kv_blocks
from llmbench.agent.engine.scheduler import Batch, Scheduler, Sequence
from llmbench.agent.engine.step_cost import StepCosts, StepShape
from llmbench.agent.engine.types import (EngineConfig, EngineInfo, EngineStats, ErrorCode, FinishReason,
                                  Request, Sink, StepOutput)
from llmbench.agent.engine.validation import request_problem
from llmbench.common.kv import kv_blocks

log = logging.getLogger(__name__)


@dataclass
class _InFlight:
    launched: Launched
    shape: StepShape
    since: float  # host time when the loop turn that launched it began


class PagedEngine:
    def __init__(self, cfg: EngineConfig):
        if cfg.block_size <= 0 or cfg.max_batch <= 0 or cfg.max_step_tokens <= 0:
            raise ValueError("block_size, max_batch and max_step_tokens must be positive")
        if not 0.0 < cfg.memory_fraction <= 1.0:
            raise ValueError(f"memory_fraction must be in (0, 1], got {cfg.memory_fraction}")
        self.cfg = cfg
        self.source = resolve_source(cfg.model)
        mc = self.source.config
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        self.kv_dtype = resolve_kv_dtype(cfg.kv_cache_dtype, self.dtype)
        check_quantization(cfg.quantization, self.device, self.dtype)
        if cfg.max_context > mc.max_position:
            raise ValueError(f"max_context {cfg.max_context} exceeds the model's "
                             f"max_position_embeddings {mc.max_position}")
        self.max_context = cfg.max_context or mc.max_position
        if cfg.block_size > self.max_context:
            # Every query would hold a whole block it can never fill, and the KV cache is sized in blocks.
            raise ValueError(f"--block-size must be at most the max context {self.max_context} of model "
                             f"{self.source.name}, got {cfg.block_size}")
        self.info = EngineInfo(
            name=self.source.name, dtype=str(self.dtype).removeprefix("torch."), device=str(self.device),
            vocab_size=mc.vocab_size, max_context=self.max_context, eos_ids=mc.eos_token_ids,
            parameters=mc.num_parameters(), engine="paged", max_batch=cfg.max_batch,
            max_step_tokens=cfg.max_step_tokens, kv_block_size=cfg.block_size,
            model_path=str(self.source.path) if self.source.path else None, quantization=cfg.quantization,
            kv_cache_dtype=str(self.kv_dtype).removeprefix("torch."))
        self.blocks = BlockManager(1, cfg.block_size)  # replaced at start()
        self.scheduler = Scheduler(self.blocks, cfg.max_batch, cfg.max_step_tokens)
        self.runner: ModelRunner | None = None
        self._cond = threading.Condition()
        self._inbox: list[tuple] = []
        self._inbox_queries = 0
        self._inbox_blocks = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._seqs: dict[tuple[Sink, int], Sequence] = {}
        self._step = 0
        self._prompt_tokens = self._output_tokens = self._received = self._finished = 0
        self._published = self._engine_side()
        self.step_costs = StepCosts()
        self._settled_at = 0.0  # when the engine thread last read a step's tokens
        # On CPU the forward runs inside launch(), so there is nothing to overlap (tests turn it on to
        # check the bookkeeping).
        self.overlap = cfg.overlap and self.device.type == "cuda"

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("engine already started")
        mc, cfg = self.source.config, self.cfg
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        backend = select_backend(cfg.attention, self.device, cfg.block_size, mc.head_dim,
                                 self.kv_dtype != self.dtype)
        model = build_model(self.source, backend, self.device, self.dtype, cfg.seed, cfg.quantization)
        num_blocks = plan_kv_blocks(mc, cfg, self.device, self.dtype, self.kv_dtype, self.max_context)
        self.runner = ModelRunner(model, num_blocks, cfg.block_size, self.max_context, self.kv_dtype)
        self.blocks = BlockManager(num_blocks, cfg.block_size)
        self.scheduler = Scheduler(self.blocks, cfg.max_batch, cfg.max_step_tokens)
        log.info("model %s on %s (%s, quantization %s, KV cache %s), attention %s, max_context %d",
                 self.info.name, self.device, self.info.dtype, cfg.quantization, self.info.kv_cache_dtype,
                 backend.name, self.max_context)
        self._warm_up()
        if cfg.cuda_graphs and self.device.type == "cuda":
            self.runner.capture_decode_graphs(self.scheduler.max_running)
        self._publish([])
        self._thread = threading.Thread(target=self._loop, name="llmbench-engine", daemon=True)
        self._thread.start()

    def _warm_up(self) -> None:
        """One prefill and one decode step, so kernels are compiled before the first query."""
        seq = Sequence(Request(id=-1, prompt=[0], max_new_tokens=2, ignore_eos=True), None, (),
                       self.blocks.blocks_for(2))
        self.scheduler.add(seq)
        while self.scheduler.has_work():
            batch = self.scheduler.schedule()
            self.scheduler.update(batch, self.runner.run(batch))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    # ---- thread-safe entry points ----------------------------------------------------------------
    def submit(self, requests: Seq[Request], sink: Sink) -> None:
        blocks = sum(self.blocks_for(r) for r in requests)
        with self._cond:
            self._inbox.append(("submit", list(requests), sink))
            self._received += len(requests)
            self._inbox_queries += len(requests)
            self._inbox_blocks += blocks
            self._cond.notify()

    def cancel(self, ids: Seq[int], sink: Sink) -> None:
        with self._cond:
            self._inbox.append(("cancel", list(ids), sink))
            self._cond.notify()

    def drop_sink(self, sink: Sink) -> None:
        with self._cond:
            self._inbox.append(("drop", None, sink))
            self._cond.notify()

    def stats(self) -> EngineStats:
        """What the engine thread last published plus the inbox, under one lock: every query is counted
        once, in the inbox or in the engine, even while the engine thread is mid-step."""
        with self._cond:
            s = self._published
            return replace(s, kv_tokens_available=s.kv_tokens_available - self._inbox_blocks * self.cfg.block_size,
                           waiting=s.waiting + self._inbox_queries, queries_received_total=self._received)

    def _engine_side(self) -> EngineStats:
        """The engine thread's own state (read on that thread, or before it starts); inbox not included."""
        s = self.scheduler
        return EngineStats(
            kv_blocks_total=self.blocks.num_blocks, kv_blocks_free=self.blocks.num_free,
            kv_tokens_available=(self.blocks.num_free - s.waiting_blocks) * self.cfg.block_size,
            running=len(s.running), waiting=len(s.waiting), steps_total=self._step,
            prompt_tokens_total=self._prompt_tokens, output_tokens_total=self._output_tokens,
            queries_received_total=0, queries_finished_total=self._finished)

    def blocks_for(self, req: Request) -> int:
        return kv_blocks(len(req.prompt), req.max_new_tokens, self.cfg.block_size)

    # ---- engine thread ---------------------------------------------------------------------------
    def _loop(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # the current device is per thread (Triton launches on it)
        in_flight: _InFlight | None = None
        while True:
            with self._cond:
                while not (self._inbox or self._stopping or self.scheduler.has_work() or in_flight):
                    self._cond.wait()
                if self._stopping:
                    return
                inbox, self._inbox = self._inbox, []
            begun = time.perf_counter()
            out: dict[Sink, StepOutput] = {}
            try:
                for kind, payload, sink in inbox:
                    if kind == "submit":
                        self._admit(payload, sink, out)
                    elif kind == "cancel":
                        self._cancel(payload, sink, out)
                    else:
                        self._drop(sink, out)
                launched = self._launch(out, begun) if self.scheduler.has_work() else None
                if launched is not None and not self.overlap:
                    self._settle(launched, out)
                    launched = None
                if in_flight is not None:  # the step just launched runs on the device while the host reads this one
                    self._settle(in_flight, out)
                in_flight = launched
            except Exception as e:  # a bug outside the forward: fail everything rather than hang
                log.exception("engine loop failed; failing all queries")
                self._fail(list(self._seqs.values()), e, out)
                in_flight = None
            self._emit(out)
            self._publish([r for kind, payload, _ in inbox if kind == "submit" for r in payload])

    def _publish(self, admitted: list[Request]) -> None:
        """The inbox's admitted queries leave its counts as the engine state that now holds them is published."""
        with self._cond:
            self._inbox_queries -= len(admitted)
            self._inbox_blocks -= sum(self.blocks_for(r) for r in admitted)
            self._published = self._engine_side()

    def _output(self, out: dict[Sink, StepOutput], sink: Sink) -> StepOutput:
        if sink not in out:
            out[sink] = StepOutput(step=0)
        return out[sink]

    def _fail(self, seqs: list[Sequence], error: Exception, out: dict[Sink, StepOutput]) -> None:
        for seq in seqs:
            if self._seqs.pop(seq.key, None) is not None:
                self.scheduler.release(seq)
                self._output(out, seq.sink).errors.append((seq.id, ErrorCode.INTERNAL, str(error)))
                self._finished += 1

    def _validate(self, req: Request, sink: Sink) -> tuple[ErrorCode, str] | None:
        if (sink, req.id) in self._seqs:
            return ErrorCode.DUPLICATE_ID, f"query id {req.id} is already running"
        return request_problem(req, self.info.vocab_size, self.max_context, self.blocks_for(req),
                               self.blocks.num_blocks)

    def _admit(self, requests: list[Request], sink: Sink, out: dict[Sink, StepOutput]) -> None:
        for req in requests:
            try:
                error = self._validate(req, sink)
            except (TypeError, ValueError) as e:
                error = ErrorCode.INVALID_QUERY, f"malformed request: {e}"
            if error is not None:
                self._output(out, sink).errors.append((req.id, *error))
                self._finished += 1
                continue
            seq = Sequence(req, sink, self.info.eos_ids, self.blocks_for(req))
            self._seqs[seq.key] = seq
            self.scheduler.add(seq)

    def _cancel(self, ids: list[int], sink: Sink, out: dict[Sink, StepOutput]) -> None:
        for qid in ids:
            seq = self._seqs.pop((sink, qid), None)
            if seq is not None:
                self.scheduler.release(seq)
                self._output(out, sink).finished.append((qid, FinishReason.CANCELLED))
                self._finished += 1

    def _drop(self, sink: Sink, out: dict[Sink, StepOutput]) -> None:
        for key in [k for k in self._seqs if k[0] == sink]:
            self.scheduler.release(self._seqs.pop(key))
            self._finished += 1
        out.pop(sink, None)

    def _launch(self, out: dict[Sink, StepOutput], begun: float) -> _InFlight | None:
        """Schedules and launches one step; None where there was nothing to run or it failed."""
        batch = Batch()
        try:
            batch = self.scheduler.schedule()
            if not batch.num_tokens:  # every running sequence waits for its last token to be read
                return None
            shape = StepShape.of(batch)
            launched = self.runner.launch(batch)
            self.scheduler.advance(batch)
        except Exception as e:
            log.exception("engine step %d failed", self._step + 1)
            self._fail([s for s, _ in batch.prefill] + batch.decode or list(self.scheduler.running), e, out)
            return None
        return _InFlight(launched, shape, begun)

    def _settle(self, step: _InFlight, out: dict[Sink, StepOutput]) -> None:
        """Reads a launched step's tokens and hands them to their sinks."""
        batch = step.launched.batch
        try:
            tokens = self.runner.collect(step.launched)
        except Exception as e:
            log.exception("engine step %d failed", self._step + 1)
            self._fail([s for s, _ in batch.prefill] + batch.decode, e, out)
            return
        results = self.scheduler.settle(batch, tokens)
        self._step += 1
        self._prompt_tokens += sum(n for _, n in batch.prefill)
        self._output_tokens += len(results)
        for seq, token, reason in results:
            o = self._output(out, seq.sink)
            o.ids.append(seq.id)
            o.counts.append(1)
            o.tokens.append(token)
            if reason is not None:
                o.finished.append((seq.id, reason))
                del self._seqs[seq.key]
                self._finished += 1
        # Wall time: since the later of this step's launch and the previous step's end (steps overlap).
        now = time.perf_counter()
        self.step_costs.record(step.shape, now - max(step.since, self._settled_at), self.runner.device_s)
        self._settled_at = now

    def _emit(self, out: dict[Sink, StepOutput]) -> None:
        for sink, step_output in out.items():
            step_output.step = self._step
            try:
                sink(step_output)
            except Exception:
                log.exception("sink failed; dropping its queries")
                self._drop(sink, {})
