"""What an agent reports about itself: memory, KV capacity, load and token rates."""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import psutil

from llmbench.agent.engine.types import Engine, EngineInfo, EngineStats
from llmbench.agent.model.fp8_scheme import read_scheme
from llmbench.proto import pb

RATE_WINDOW_S = 5.0


def memory_info(device: str) -> tuple[int, int, str]:
    """(free bytes, total bytes, kind) of the memory the model lives in."""
    if device.startswith("cuda"):
        import torch  # only CUDA agents pay for importing torch here
        free, total = torch.cuda.mem_get_info(torch.device(device))
        return free, total, "cuda"
    mem = psutil.virtual_memory()
    return mem.available, mem.total, "host"


def scales(info: EngineInfo) -> tuple[str, str, str]:
    """(weight, activation, KV) scales as ModelInfo names them: a pre-quantized checkpoint's, else
    --quantization fp8's own (per-channel weights, per-token activations); empty where there are none."""
    scheme = read_scheme(Path(info.model_path)) if info.model_path else None
    kv = "checkpoint" if scheme and scheme.kv_scales else ""
    if info.quantization != "fp8":
        return "", "", kv
    if scheme and scheme.weights:
        return scheme.weights, scheme.activations or "", kv
    return "channel", "dynamic", kv


class RateWindow:
    """Tokens per second from deltas of engine totals over the last few seconds."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int, int]] = deque()

    def update(self, now: float, output_total: int, prompt_total: int) -> tuple[float, float]:
        self._samples.append((now, output_total, prompt_total))
        # Keep one sample at or before the window start as the base of the delta.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()
        t0, out0, prompt0 = self._samples[0]
        if now - t0 <= 0:
            return 0.0, 0.0
        return (output_total - out0) / (now - t0), (prompt_total - prompt0) / (now - t0)


@dataclass
class StatusReporter:
    engine: Engine
    agent_id: str
    node_name: str
    ready: bool = False

    def __post_init__(self) -> None:
        self._rates = RateWindow()

    @cached_property
    def _scales(self) -> tuple[str, str, str]:
        return scales(self.engine.info)  # read once: the checkpoint's config does not change under a running agent

    def model_info(self) -> pb.ModelInfo:
        i = self.engine.info
        weights, activations, kv = self._scales
        return pb.ModelInfo(name=i.name, dtype=i.dtype, device=i.device, vocab_size=i.vocab_size,
                            max_context=i.max_context, eos_token_ids=list(i.eos_ids), parameters=i.parameters,
                            engine=i.engine, quantization=i.quantization, kv_cache_dtype=i.kv_cache_dtype,
                            weight_scales=weights, activation_scales=activations, kv_scales=kv)

    def status(self) -> pb.AgentStatus:
        info = self.engine.info
        now = time.time()
        free, total, kind = memory_info(info.device)
        s = self.engine.stats() if self.ready else EngineStats(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        out_rate, prompt_rate = self._rates.update(time.monotonic(), s.output_tokens_total, s.prompt_tokens_total)
        return pb.AgentStatus(
            agent_id=self.agent_id, node_name=self.node_name, model=self.model_info(), ready=self.ready,
            kv_block_size=info.kv_block_size, kv_blocks_total=s.kv_blocks_total, kv_blocks_free=s.kv_blocks_free,
            kv_tokens_available=s.kv_tokens_available, memory_free_bytes=free, memory_total_bytes=total,
            memory_kind=kind, running=s.running, waiting=s.waiting, output_tokens_per_s=out_rate,
            prompt_tokens_per_s=prompt_rate, steps_total=s.steps_total, output_tokens_total=s.output_tokens_total,
            queries_received_total=s.queries_received_total, queries_finished_total=s.queries_finished_total,
            max_batch=info.max_batch, max_step_tokens=info.max_step_tokens, timestamp=now,
            step_running_s=s.step_running_s, slowest_step_s=s.slowest_step_s)
