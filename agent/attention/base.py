"""What every attention backend shares: the step's metadata, the backend interface, the cache write,
and the registry that `select_backend` chooses from.

Tokens of a step are laid out [prefill-chunk tokens..., decode tokens...]. Every layer first writes
the step's K/V into the paged cache through `slot_mapping`, then the prefill part attends over its
cached prefix and its own fresh K/V (in the model's type, whatever the cache's), and the decode part
over the cache. Cache layout per layer: [num_blocks, block_size, kv_heads, head_dim].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # int64 [T]: block * block_size + row of each new token
    num_prefill_tokens: int
    num_decode_tokens: int
    # prefill part (P sequences)
    cu_seqlens_q: torch.Tensor | None = None  # int32 [P+1]
    cu_seqlens_k: torch.Tensor | None = None  # int32 [P+1]
    seq_lens: torch.Tensor | None = None  # int32 [P]: cached tokens incl. this chunk
    prefill_block_tables: torch.Tensor | None = None  # int32 [P, max_blocks]
    max_seqlen_q: int = 0
    max_seqlen_k: int = 0
    # decode part (D sequences, one token each)
    context_lens: torch.Tensor | None = None  # int32 [D], incl. the current token
    decode_block_tables: torch.Tensor | None = None  # int32 [D, max_blocks]


class AttentionBackend(Protocol):
    name: str
    auto_preference: int  # --attention auto takes the highest that does not refuse

    def __init__(self, scale: float) -> None: ...

    @staticmethod
    def refuses(device: torch.device, block_size: int, head_dim: int, fp8_kv: bool) -> str | None:
        """Why it cannot run this model on this device (the end of "attention 'NAME' ..."), or None."""

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, meta: AttentionMetadata, out: torch.Tensor) -> None:
        """q [P,Hq,D], k/v [P,Hkv,D]: the chunks' own keys; positions before a chunk from the cache."""

    def decode(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
               meta: AttentionMetadata, out: torch.Tensor) -> None: ...


BACKENDS: dict[str, type[AttentionBackend]] = {}


def register(cls: type[AttentionBackend]) -> type[AttentionBackend]:
    BACKENDS[cls.name] = cls
    return cls


def paged_attention(backend: AttentionBackend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    k_cache: torch.Tensor, v_cache: torch.Tensor,
                    meta: AttentionMetadata) -> torch.Tensor:
    """q [T,Hq,D], k/v [T,Hkv,D] -> [T,Hq,D]."""
    write_cache(k, v, k_cache, v_cache, meta.slot_mapping)
    out = torch.empty_like(q)
    p = meta.num_prefill_tokens
    if p:
        backend.prefill(q[:p], k[:p], v[:p], k_cache, v_cache, meta, out[:p])
    if meta.num_decode_tokens:
        backend.decode(q[p:], k_cache, v_cache, meta, out[p:])
    return out


def write_cache(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                slots: torch.Tensor) -> None:
    """K/V of the step's tokens into their cache slots, in the cache's type: one Triton launch on CUDA,
    the torch code below (the reference) elsewhere."""
    if k.is_cuda:
        from llmbench.agent.kernels import kv_write
        kv_write.write_kv(k, v, k_cache, v_cache, slots)
        return
    for cache, x in ((k_cache, k), (v_cache, v)):
        rows, x = cache.view(-1, *cache.shape[2:]), x.to(cache.dtype)
        if cache.dtype == torch.float8_e4m3fn:  # index_copy_ has no fp8 kernels; the bytes copy the same
            rows, x = rows.view(torch.uint8), x.view(torch.uint8)
        rows.index_copy_(0, slots, x)
