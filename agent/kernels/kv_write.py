"""Writing a step's K/V into the paged cache in one launch: each program takes one token's K and V
rows (strided views of the fused QKV output), converts them to the cache's type (e4m3 for an fp8
cache) and stores them at the token's slot. Replaces two casts and two index_copy_ calls per layer.
CUDA only: Triton's interpreter rounds to fp8 wrongly, and the torch path in agent/attention.py is
the reference.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _write_kv_kernel(k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
                     stride_kt, stride_kh, stride_vt, stride_vh, stride_slot, stride_head,
                     HEADS: tl.constexpr, BLOCK_H: tl.constexpr, HEAD_DIM: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, HEAD_DIM)[None, :]
    ok = h < HEADS
    dst = slot * stride_slot + h * stride_head + d
    k = tl.load(k_ptr + t * stride_kt + h * stride_kh + d, mask=ok)
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=ok)
    v = tl.load(v_ptr + t * stride_vt + h * stride_vh + d, mask=ok)
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=ok)


def write_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slots: torch.Tensor) -> None:
    """k, v [T, Hkv, D] (contiguous rows); caches [num_blocks, block_size, Hkv, D], contiguous, of one
    type; slots int64 [T]: block * block_size + row of each token."""
    tokens, heads, head_dim = k.shape
    if v.shape != k.shape or k_cache.shape[2:] != (heads, head_dim) or v_cache.shape != k_cache.shape:
        raise ValueError(f"k/v {tuple(k.shape)}/{tuple(v.shape)} do not fit caches {tuple(k_cache.shape)}")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()) or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("write_kv needs contiguous caches and k/v rows with a contiguous last dimension")
    if head_dim & (head_dim - 1) or slots.shape != (tokens,):
        raise ValueError(f"head_dim must be a power of two ({head_dim}) and slots [T] ({tuple(slots.shape)})")
    if tokens:
        _write_kv_kernel[(tokens,)](
            k, v, k_cache, v_cache, slots, k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            k_cache.stride(1), k_cache.stride(2), HEADS=heads, BLOCK_H=triton.next_power_of_2(heads),
            HEAD_DIM=head_dim, num_warps=4)
