"""Paged attention: the step's metadata, the backends, and the choice between them.

Tokens of a step are laid out [prefill-chunk tokens..., decode tokens...]. Every layer first writes
the step's K/V into the paged cache through `slot_mapping`, then the prefill part and the decode
part each attend over the cache. Cache layout per layer: [num_blocks, block_size, kv_heads, head_dim].
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


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

    def prefill(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                meta: AttentionMetadata, out: torch.Tensor) -> None: ...

    def decode(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
               meta: AttentionMetadata, out: torch.Tensor) -> None: ...


def paged_attention(backend: AttentionBackend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    k_cache: torch.Tensor, v_cache: torch.Tensor,
                    meta: AttentionMetadata) -> torch.Tensor:
    """q [T,Hq,D], k/v [T,Hkv,D] -> [T,Hq,D]."""
    write_cache(k, v, k_cache, v_cache, meta.slot_mapping)
    out = torch.empty_like(q)
    p = meta.num_prefill_tokens
    if p:
        backend.prefill(q[:p], k_cache, v_cache, meta, out[:p])
    if meta.num_decode_tokens:
        backend.decode(q[p:], k_cache, v_cache, meta, out[p:])
    return out


def write_cache(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                slots: torch.Tensor) -> None:
    """K/V of the step's tokens into their cache slots, in the cache's type: one Triton launch on CUDA,
    the torch code below (the reference) elsewhere."""
    if k.is_cuda:
        from llmbench.agent import triton_cache
        triton_cache.write_kv(k, v, k_cache, v_cache, slots)
        return
    for cache, x in ((k_cache, k), (v_cache, v)):
        rows, x = cache.view(-1, *cache.shape[2:]), x.to(cache.dtype)
        if cache.dtype == torch.float8_e4m3fn:  # index_copy_ has no fp8 kernels; the bytes copy the same
            rows, x = rows.view(torch.uint8), x.view(torch.uint8)
        rows.index_copy_(0, slots, x)


def _gather(cache: torch.Tensor, block_table: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    block_size = cache.shape[1]
    blocks = block_table[: (length + block_size - 1) // block_size]
    return cache[blocks].flatten(0, 1)[:length].to(dtype)


class TorchAttention:
    """Reference: one SDPA call per sequence over K/V gathered from the cache. Exact, slow, syncs."""
    name = "torch"

    def __init__(self, scale: float):
        self.scale = scale

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q_len, k_len = q.shape[0], k.shape[0]
        mask = None
        if 1 < q_len < k_len:  # a later prefill chunk: causal, aligned to the end of the keys
            mask = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(k_len - q_len)
        o = F.scaled_dot_product_attention(
            q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask,
            is_causal=mask is None and q_len > 1, scale=self.scale, enable_gqa=True)
        return o.transpose(0, 1)

    def prefill(self, q, k_cache, v_cache, meta, out) -> None:
        cu = meta.cu_seqlens_q.tolist()
        for i, seq_len in enumerate(meta.seq_lens.tolist()):
            table = meta.prefill_block_tables[i]
            out[cu[i]:cu[i + 1]] = self._attend(q[cu[i]:cu[i + 1]], _gather(k_cache, table, seq_len, q.dtype),
                                                _gather(v_cache, table, seq_len, q.dtype))

    def decode(self, q, k_cache, v_cache, meta, out) -> None:
        for i, ctx_len in enumerate(meta.context_lens.tolist()):
            table = meta.decode_block_tables[i]
            out[i:i + 1] = self._attend(q[i:i + 1], _gather(k_cache, table, ctx_len, q.dtype),
                                        _gather(v_cache, table, ctx_len, q.dtype))


class TritonAttention:
    """Triton paged kernels (agent/triton_attention.py) for both parts."""
    name = "triton"

    def __init__(self, scale: float):
        from llmbench.agent import triton_attention
        self.kernels = triton_attention
        self.scale = scale

    def prefill(self, q, k_cache, v_cache, meta, out) -> None:
        self.kernels.paged_prefill(q, k_cache, v_cache, meta.prefill_block_tables, meta.cu_seqlens_q,
                                   meta.seq_lens, meta.max_seqlen_q, self.scale, out=out)

    def decode(self, q, k_cache, v_cache, meta, out) -> None:
        self.kernels.paged_decode(q, k_cache, v_cache, meta.decode_block_tables, meta.context_lens,
                                  self.scale, out=out)


class FlashAttention:
    """flash-attn 2 with a block table (it needs block_size to be a multiple of 256)."""
    name = "flash"

    def __init__(self, scale: float):
        from flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache
        self.varlen, self.with_kvcache = flash_attn_varlen_func, flash_attn_with_kvcache
        self.scale = scale

    def prefill(self, q, k_cache, v_cache, meta, out) -> None:
        out.copy_(self.varlen(q, k_cache, v_cache, meta.cu_seqlens_q, meta.cu_seqlens_k,
                              meta.max_seqlen_q, meta.max_seqlen_k, softmax_scale=self.scale,
                              causal=True, block_table=meta.prefill_block_tables))

    def decode(self, q, k_cache, v_cache, meta, out) -> None:
        o = self.with_kvcache(q.unsqueeze(1), k_cache, v_cache, cache_seqlens=meta.context_lens,
                              block_table=meta.decode_block_tables, softmax_scale=self.scale, causal=True)
        out.copy_(o.squeeze(1))


def _flash_importable() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def triton_takes_head_dim(head_dim: int) -> bool:
    """The Triton kernels tile head_dim in one power-of-two block of at least 16."""
    return head_dim >= 16 and not head_dim & (head_dim - 1)


def select_backend(name: str, device: torch.device, block_size: int, head_dim: int,
                   fp8_kv: bool = False) -> AttentionBackend:
    """auto: torch on CPU; on CUDA flash-attn when installed and block_size fits it (and the KV cache
    is not fp8, which flash-attn 2 cannot read), else Triton, else (a head_dim no kernel takes) torch."""
    if name not in ("auto", "torch", "triton", "flash"):
        raise ValueError(f"unknown attention backend {name!r}: use auto, torch, triton or flash")
    scale = head_dim ** -0.5
    if device.type != "cuda":
        if name not in ("auto", "torch"):
            raise ValueError(f"attention backend {name!r} needs a CUDA device (device is {device})")
        return TorchAttention(scale)
    if name == "auto":
        name = "flash" if _flash_importable() and block_size % 256 == 0 and not fp8_kv else "triton"
        if name == "triton" and not triton_takes_head_dim(head_dim):
            log.warning("head_dim %d: the Triton kernels need a power of two >= 16; attention runs on the "
                        "slow torch reference", head_dim)
            name = "torch"
    if name == "flash" and fp8_kv:
        raise ValueError("attention 'flash' cannot read an fp8 KV cache: use triton")
    if name == "flash" and block_size % 256:
        raise ValueError(f"attention 'flash' needs block_size a multiple of 256, got {block_size}")
    if name == "triton" and not triton_takes_head_dim(head_dim):
        raise ValueError(f"attention 'triton' needs head_dim a power of two >= 16, the model has {head_dim}: "
                         "use --attention auto or torch")
    return {"torch": TorchAttention, "triton": TritonAttention, "flash": FlashAttention}[name](scale)
