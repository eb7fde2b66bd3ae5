"""The step cost model: every engine step's wall, device and host time by kind and size, beside its floor.

A step's floor is a roofline per kernel class, summed: the layer GEMMs (their weights read once, or their
FLOPs at the measured matmul rate, whichever is longer), the LM head over the sampled rows, and
attention (the KV bytes it reads at the measured copy rate, or its FLOPs). "Device" is the span from the
step's first kernel to its last on the GPU (on CPU: the forward's wall time); "host" is the rest of the
step's wall time, when the device waits for Python (scheduling, input preparation, token bookkeeping).
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmbench.agent.model.config import ModelConfig
from llmbench.common.histogram import STEP_BOUNDS_S, Histogram

if TYPE_CHECKING:  # the scheduler's Batch is only read here, never built
    from llmbench.agent.engine.scheduler import Batch

DECODE_BATCHES = (1, 8, 32, 128, 256, 512, 1024, 2048)  # decode-only steps, bucketed by batch
MIXED_TOKENS = (512, 1024, 2048, 4096, 8192, 16384)  # steps with prefill, bucketed by tokens
STEP_KINDS = ("decode", "mixed")

__all__ = ["Rates", "StepCosts", "StepShape", "floor_seconds"]


@dataclass(frozen=True)
class StepShape:
    """What a step computes, read from its Batch before it runs."""
    tokens: int  # rows through the layers
    decode: int  # decoding sequences
    sampled: int  # rows through the LM head
    kv_read: int  # cached tokens whose K/V attention reads (each decode context, each prefill chunk's context)
    pairs: int  # (query, key) pairs attention scores

    @classmethod
    def of(cls, batch: Batch) -> "StepShape":
        decode_ctx = sum(len(s.tokens) for s in batch.decode)
        prefill_ctx = sum(s.num_cached + n for s, n in batch.prefill)
        prefill_pairs = sum(n * s.num_cached + n * (n + 1) // 2 for s, n in batch.prefill)
        done = sum(1 for s, n in batch.prefill if s.num_cached + n == s.prompt_len)
        return cls(tokens=batch.num_tokens, decode=len(batch.decode), sampled=done + len(batch.decode),
                   kv_read=decode_ctx + prefill_ctx, pairs=decode_ctx + prefill_pairs)

    @property
    def kind(self) -> str:
        return "decode" if self.tokens == self.decode else "mixed"

    @property
    def bucket(self) -> int:
        """The smallest bucket bound that holds the step (its batch for decode, its tokens for mixed)."""
        bounds, size = (DECODE_BATCHES, self.decode) if self.kind == "decode" else (MIXED_TOKENS, self.tokens)
        i = bisect.bisect_left(bounds, size)
        return bounds[i] if i < len(bounds) else size


@dataclass(frozen=True)
class Rates:
    """What the device does per second, measured: matmul FLOP/s in the model's dtype and in the layers'
    precision (fp8 when quantized), and bytes read per second."""
    matmul: float
    layer_matmul: float
    read: float


def floor_seconds(mc: ModelConfig, shape: StepShape, rates: Rates, layer_bytes: int, head_bytes: int,
                  kv_bytes_per_token: int) -> float:
    h = mc.hidden_size
    layer_flops = 2 * mc.num_layers * mc.layer_matmul_params * shape.tokens
    layers = max(layer_flops / rates.layer_matmul, layer_bytes / rates.read)
    head = max(2 * h * mc.vocab_size * shape.sampled / rates.matmul, head_bytes / rates.read)
    attention = max(4 * mc.q_size * mc.num_layers * shape.pairs / rates.matmul,
                    kv_bytes_per_token * shape.kv_read / rates.read)
    return layers + head + attention


@dataclass
class _Sums:
    steps: int = 0
    tokens: int = 0
    wall: float = 0.0
    device: float = 0.0
    floor: float = 0.0


class StepCosts:
    """Per (kind, bucket): step count and summed wall/device seconds (and floors, where rates are known);
    per kind, histograms of each step's wall and device seconds (Prometheus). Recorded on the engine
    thread, read from any other."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[tuple[str, int], _Sums] = {}
        self.floor = None  # StepShape -> seconds, set by whoever measured the device's rates
        self.wall_seconds: dict[str, Histogram] = {}
        self.device_seconds: dict[str, Histogram] = {}
        self.clear()

    def record(self, shape: StepShape, wall_s: float, device_s: float) -> None:
        floor = self.floor(shape) if self.floor is not None else 0.0
        with self._lock:
            s = self._sums.setdefault((shape.kind, shape.bucket), _Sums())
            s.steps += 1
            s.tokens += shape.tokens
            s.wall += wall_s
            s.device += device_s
            s.floor += floor
        self.wall_seconds[shape.kind].observe(wall_s)
        self.device_seconds[shape.kind].observe(device_s)

    def snapshot(self) -> dict[tuple[str, int], _Sums]:
        with self._lock:
            return {k: _Sums(**vars(v)) for k, v in sorted(self._sums.items())}

    def clear(self) -> None:
        with self._lock:
            self._sums.clear()
        self.wall_seconds = {kind: Histogram(STEP_BOUNDS_S) for kind in STEP_KINDS}
        self.device_seconds = {kind: Histogram(STEP_BOUNDS_S) for kind in STEP_KINDS}

    def table(self) -> list[str]:
        """Markdown rows: one per (kind, bucket), then all steps; mean milliseconds per step."""
        rows = ["| step kind | size | steps | wall ms | device ms | host ms | floor ms | wall / floor |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        total = _Sums()
        for (kind, bucket), s in self.snapshot().items():
            size = f"batch ≤ {bucket}" if kind == "decode" else f"≤ {bucket} tokens"
            rows.append(_row(kind, size, s))
            for name in vars(total):
                setattr(total, name, getattr(total, name) + getattr(s, name))
        if total.steps:
            rows.append(_row("all", f"{total.tokens} tokens", total))
        return rows


def _row(kind: str, size: str, s: _Sums) -> str:
    ms = 1e3 / s.steps
    ratio = f"{s.wall / s.floor:.2f}×" if s.floor > 0 else "n/a"
    floor = f"{s.floor * ms:.2f}" if s.floor > 0 else "n/a"
    return (f"| {kind} | {size} | {s.steps} | {s.wall * ms:.2f} | {s.device * ms:.2f} | "
            f"{(s.wall - s.device) * ms:.2f} | {floor} | {ratio} |")
