"""PagedEngine: continuous batching over a paged KV cache, behind the shared engine front."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from llmbench.agent.attention import select_backend
from llmbench.agent.engine.block_manager import BlockManager
from llmbench.agent.engine.front import EngineFront
from llmbench.agent.model.loader import (build_model, check_quantization, resolve_device, resolve_dtype,
                                   resolve_kv_dtype, resolve_source)
from llmbench.agent.engine.runner import Launched, ModelRunner, plan_kv_blocks
from llmbench.agent.engine.scheduler import Batch, Scheduler, Sequence
from llmbench.agent.engine.step_budget import FIRST_TOKENS
from llmbench.agent.engine.step_cost import StepCosts, StepShape
from llmbench.agent.engine.types import EngineConfig, EngineInfo, Request, Sink, StepOutput

log = logging.getLogger(__name__)


def _no_sink(out: StepOutput) -> None:
    """Where the warm-up query's tokens go: nowhere (it runs before the loop, outside the front)."""


@dataclass
class _InFlight:
    launched: Launched
    shape: StepShape
    since: float  # host time when the loop turn that launched it began


class PagedEngine(EngineFront[Sequence]):
    def __init__(self, cfg: EngineConfig):
        super().__init__(cfg.block_size)
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
        self.scheduler = Scheduler(self.blocks, cfg.max_batch, cfg.max_step_tokens, cfg.tpot_headroom)
        self.runner: ModelRunner | None = None
        self.step_costs = StepCosts()
        self._in_flight: _InFlight | None = None  # launched, its tokens not read yet
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
        self.scheduler = Scheduler(self.blocks, cfg.max_batch, cfg.max_step_tokens, cfg.tpot_headroom)
        log.info("model %s on %s (%s, quantization %s, KV cache %s), attention %s, max_context %d",
                 self.info.name, self.device, self.info.dtype, cfg.quantization, self.info.kv_cache_dtype,
                 backend.name, self.max_context)
        self._warm_up()
        if cfg.cuda_graphs and self.device.type == "cuda":
            self.runner.capture_decode_graphs(self.scheduler.max_running)
        self._start_loop()

    def _warm_up(self) -> None:
        """A prefill of a first step's size and one decode step, twice: the first pass compiles kernels
        before any query, the second is timed. The front learns what a step costs on this device (a step
        under way many times longer is hung, not slow) and the step budget starts within its time cap on
        a slow one."""
        n = max(1, min(FIRST_TOKENS, self.max_context - 1, self.blocks.num_blocks * self.cfg.block_size - 1))
        for timed in (False, True):
            req = Request(id=-1, prompt=[0] * n, max_new_tokens=2, ignore_eos=True)
            self.scheduler.add(Sequence(req, _no_sink, (), self.blocks_for(req)))
            begun = time.perf_counter()
            while self.scheduler.has_work():
                step_begun = time.perf_counter()
                batch = self.scheduler.schedule()
                self.scheduler.update(batch, self._runner().run(batch))
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                if timed:
                    self._stepped(time.perf_counter() - step_begun)
            if timed:
                self.scheduler.budget.seed(n + 1, time.perf_counter() - begun)

    def _runner(self) -> ModelRunner:
        assert self.runner is not None, "the engine is not started"
        return self.runner

    # ---- the front's hooks -----------------------------------------------------------------------
    def _kv(self) -> tuple[int, int, int, int, int]:
        s = self.scheduler
        return self.blocks.num_blocks, self.blocks.num_free, s.waiting_blocks, len(s.running), len(s.waiting)

    def _num_blocks(self) -> int:
        return self.blocks.num_blocks

    def _accept(self, req: Request, sink: Sink) -> Sequence:
        seq = Sequence(req, sink, self.info.eos_ids, self.blocks_for(req))
        self.scheduler.add(seq)
        return seq

    def _release(self, seq: Sequence) -> None:
        if not seq.ended:  # the scheduler already released what a step finished
            self.scheduler.release(seq)

    def _has_work(self) -> bool:
        return self.scheduler.has_work() or self._in_flight is not None

    def _thread_started(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # the current device is per thread (Triton launches on it)

    def _turn(self, out: dict[Sink, StepOutput]) -> None:
        """Launches the next step; reads the one before it while this one runs on the device (overlap)."""
        begun = time.perf_counter()
        launched = self._launch(out, begun) if self.scheduler.has_work() else None
        if launched is not None and not self.overlap:
            self._settle(launched, out)
            launched = None
        in_flight, self._in_flight = self._in_flight, launched
        if in_flight is not None:
            self._settle(in_flight, out)

    def _fail_all(self, error: Exception, out: dict[Sink, StepOutput]) -> None:
        self._in_flight = None  # its queries fail with the rest: nothing in flight is read any more
        super()._fail_all(error, out)

    def _launch(self, out: dict[Sink, StepOutput], begun: float) -> _InFlight | None:
        """Schedules and launches one step; None where there was nothing to run or it failed."""
        batch = Batch()
        try:
            batch = self.scheduler.schedule()
            if not batch.num_tokens:  # every running sequence waits for its last token to be read
                return None
            shape = StepShape.of(batch)
            launched = self._runner().launch(batch)
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
            tokens = self._runner().collect(step.launched)
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
                self._finished_one(seq.sink, seq.id, o, reason)
        # Wall time: since the later of this step's launch and the previous step's end (steps overlap).
        now = time.perf_counter()
        wall = now - max(step.since, self._settled_at)
        self.step_costs.record(step.shape, wall, self._runner().device_s)
        self.scheduler.budget.observe(step.shape.tokens, wall)
        self._settled_at = now
