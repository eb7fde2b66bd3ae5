"""The engine's public face: what the gRPC server (and `generate`, `bench`) may rely on.

Every engine (the paged one, the simulated one) implements `Engine`. Ids are chosen by the
caller and are unique per sink; the engine keys queries by (sink, id).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, Sequence

from llmbench.agent.engine.step_budget import HEADROOM

if TYPE_CHECKING:
    from llmbench.agent.engine.step_cost import StepCosts


class FinishReason(enum.IntEnum):
    # Numbers match llmbench.v1.FinishReason.
    EOS = 1
    STOP = 2
    LENGTH = 3
    CANCELLED = 4


class ErrorCode(enum.IntEnum):
    # Numbers match llmbench.v1.ErrorCode.
    INVALID_QUERY = 1
    TOO_LONG = 2
    DUPLICATE_ID = 3
    INTERNAL = 4


@dataclass
class Request:
    id: int
    prompt: Sequence[int]
    max_new_tokens: int
    min_new_tokens: int = 0
    stop_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    tpot_limit_s: float = 0.0  # the time per output token its scenario allows (0: none); steps are sized to it


@dataclass
class StepOutput:
    """What one engine step produced for the queries of one sink.

    ids/counts/tokens are parallel: ids[i] gained counts[i] tokens, taken in order from tokens.
    Finishes come after the tokens of the same step. A query with an error gets no finish.
    """
    step: int
    ids: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    finished: list[tuple[int, FinishReason]] = field(default_factory=list)
    errors: list[tuple[int, ErrorCode, str]] = field(default_factory=list)


def token_runs(out) -> Iterator[tuple[int, Sequence[int]]]:
    """(id, the tokens it gained) per entry of a StepOutput or of a pb.StepResult (same packing)."""
    pos = 0
    for qid, count in zip(out.ids, out.counts):
        yield qid, out.tokens[pos:pos + count]
        pos += count


# Called on the engine thread; must return quickly and never block on the network.
Sink = Callable[[StepOutput], None]


@dataclass(frozen=True)
class EngineInfo:
    name: str
    dtype: str
    device: str
    vocab_size: int
    max_context: int
    eos_ids: tuple[int, ...]
    parameters: int
    engine: str  # "paged", "simulated" or "openai"
    max_batch: int
    max_step_tokens: int
    kv_block_size: int
    model_path: str | None = None  # HF folder the weights (and tokenizer) came from, None for presets
    quantization: str = "none"  # "none" or "fp8" (the layer GEMMs)
    kv_cache_dtype: str = ""  # the KV cache's element type, e.g. "bfloat16" or "float8_e4m3fn"


@dataclass(frozen=True)
class EngineStats:
    kv_blocks_total: int
    kv_blocks_free: int
    kv_tokens_available: int  # free KV tokens minus reservations of waiting queries
    running: int
    waiting: int
    steps_total: int
    prompt_tokens_total: int
    output_tokens_total: int
    queries_received_total: int
    queries_finished_total: int
    step_running_s: float = 0.0  # how long the step under way has run; 0 between steps
    slowest_step_s: float = 0.0  # the longest step finished so far, warm-up included
    unavailable: str = ""  # why the engine cannot serve now (an endpoint's server is down); '' while it can


@dataclass
class EngineConfig:
    model: str = "tiny"  # HF folder or preset name ("tiny", "llama3.1-8b")
    engine: str = "paged"  # "paged", "simulated" or "openai"
    dtype: str = "auto"  # float32 | bfloat16 | float16 | auto (float32 on CPU, bfloat16 on GPU)
    device: str = "auto"  # cpu | cuda | cuda:N | auto
    memory_fraction: float = 0.9  # share of device memory the agent may use in all (weights + KV)
    num_kv_blocks: int = 0  # 0: size the KV cache from memory
    max_kv_blocks: int = 0  # sized from memory: at most this many (0: no cap; `generate` sizes it to its job)
    block_size: int = 16
    max_batch: int = 256
    max_step_tokens: int = 8192
    tpot_headroom: float = HEADROOM  # steps aim at this share of the tightest TPOT limit of their queries
    max_context: int = 0  # 0: the model's own limit
    attention: str = "auto"  # auto | torch | triton | flash
    quantization: str = "none"  # none | fp8: layer GEMMs in e4m3, per-channel weight and per-token scales
    kv_cache_dtype: str = "auto"  # auto (the model dtype) | fp8 (e4m3, scale 1, as vLLM's default)
    cuda_graphs: bool = True
    # CUDA: launch step N+1 before step N's tokens are read, so the host's work hides behind the device's
    # (token-exact with the waited loop; H100 fp8 Offline bench +3.8 %, host 3.1 -> 0.3 ms a step: docs/perf.md v5).
    overlap: bool = True
    seed: int = 0
    tokens_per_s: float = 2000.0  # simulated engine only: output tokens/s of the whole engine
    url: str = ""  # openai engine only: the server's http://HOST:PORT/v1
    api_key_file: str = ""  # openai engine only: a file holding its API key
    served_model: str = ""  # openai engine only: the model name to ask for ('': the one it serves)


class Engine(Protocol):
    info: EngineInfo
    step_costs: StepCosts  # what each step cost, by kind and size (agent/engine/step_cost.py)

    def start(self) -> None:
        """Load and warm up (blocking), then run the step loop on a background thread."""

    def stop(self) -> None:
        """Stop the loop; running queries are dropped."""

    def submit(self, requests: Sequence[Request], sink: Sink) -> None:
        """Thread-safe. Invalid requests get an error through sink at the next step."""

    def cancel(self, ids: Sequence[int], sink: Sink) -> None:
        """Thread-safe. Each still-running id finishes with CANCELLED."""

    def drop_sink(self, sink: Sink) -> None:
        """Thread-safe. Cancel every query of sink silently (its stream is gone)."""

    def stats(self) -> EngineStats:
        """Thread-safe snapshot."""
