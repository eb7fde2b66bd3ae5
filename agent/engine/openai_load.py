"""What a serving stack's own Prometheus metrics say about its load and KV cache.

Read per stack (first name found wins; each is a gauge):

| stack | KV used (0..1) | KV size | running | waiting |
| --- | --- | --- | --- | --- |
| vLLM | `vllm:kv_cache_usage_perc` (older: `vllm:gpu_cache_usage_perc`) | `vllm:cache_config_info` labels num_gpu_blocks x block_size | `vllm:num_requests_running` | `vllm:num_requests_waiting` |
| SGLang | `sglang:token_usage` | `sglang:max_total_num_tokens` | `sglang:num_running_reqs` | `sglang:num_queue_reqs` |
| llama.cpp | `llamacpp:kv_cache_usage_ratio` | (from /props: n_ctx) | `llamacpp:requests_processing` | `llamacpp:requests_deferred` |
| TensorRT-LLM | `trtllm_kv_cache_utilization` | | `trtllm_num_requests_running` | `trtllm_num_requests_waiting` |

A stack that exports none of them (metrics off, or an unknown server) leaves each None: the engine then
counts the KV its own queries reserved.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

KV_USED = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage",
           "llamacpp:kv_cache_usage_ratio", "trtllm_kv_cache_utilization")
KV_TOKENS = ("sglang:max_total_num_tokens",)
RUNNING = ("vllm:num_requests_running", "sglang:num_running_reqs", "llamacpp:requests_processing",
           "trtllm_num_requests_running")
WAITING = ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "llamacpp:requests_deferred",
           "trtllm_num_requests_waiting")
VLLM_CACHE_INFO = "vllm:cache_config_info"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[str, list[tuple[dict[str, str], float]]]


@dataclass(frozen=True)
class BackendLoad:
    kv_used: float | None = None  # share of the KV cache in use, 0..1
    kv_tokens: int | None = None  # KV cache size in tokens
    running: int | None = None
    waiting: int | None = None


def parse(text: str) -> Samples:
    """name -> [(labels, value)] of a Prometheus text exposition; lines that do not parse are skipped."""
    samples: Samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not (m := _SAMPLE.match(line.strip())):
            continue
        try:
            value = float(m[3])
        except ValueError:
            continue
        samples.setdefault(m[1], []).append((dict(_LABEL.findall(m[2] or "")), value))
    return samples


def _total(samples: Samples, names: tuple[str, ...]) -> float | None:
    """The first named gauge present, summed over its series (a server with several engines or ranks)."""
    for name in names:
        if name in samples:
            return sum(v for _, v in samples[name])
    return None


def _mean(samples: Samples, names: tuple[str, ...]) -> float | None:
    for name in names:
        if series := samples.get(name):
            return sum(v for _, v in series) / len(series)
    return None


def _vllm_kv_tokens(samples: Samples) -> int | None:
    for labels, _ in samples.get(VLLM_CACHE_INFO, []):
        try:
            return int(labels["num_gpu_blocks"]) * int(labels["block_size"])
        except (KeyError, ValueError):
            continue
    return None


def backend_load(text: str) -> BackendLoad:
    samples = parse(text)
    used = _mean(samples, KV_USED)
    tokens = _total(samples, KV_TOKENS)
    running, waiting = _total(samples, RUNNING), _total(samples, WAITING)
    return BackendLoad(
        kv_used=None if used is None else min(max(used, 0.0), 1.0),
        kv_tokens=int(tokens) if tokens is not None else _vllm_kv_tokens(samples),
        running=None if running is None else int(running), waiting=None if waiting is None else int(waiting))
