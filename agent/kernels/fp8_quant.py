"""Per-token FP8 quantization of activations in one pass: each program reads one row, takes its
absolute maximum, writes the row in e4m3 and its float32 scale. Same math as
fp8.quantize_rows_torch; no host sync, so it can sit in a CUDA graph. CUDA only (see fp8.py).

`python -m llmbench.agent.commands.bench_kernels fp8` (CUDA) times it and the fp8 GEMM at Llama-3.1-8B shapes.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from llmbench.agent.kernels.fp8_format import FP8, FP8_MAX, MIN_AMAX, Fp8Rows

_FP8_MAX = tl.constexpr(FP8_MAX)
_MIN_AMAX = tl.constexpr(MIN_AMAX)


@triton.jit
def store_fp8_row(q_ptr, scale_ptr, row, cols, ok, x, stride_q):
    """Write one whole row x (float32, zeros where not ok) as e4m3 with its scale; the other fused
    kernels (agent/kernels/fused.py) end in this to hand fp8 straight to the next GEMM."""
    scale = tl.maximum(tl.max(tl.abs(x), 0), _MIN_AMAX) / _FP8_MAX
    # div_rn: '/' compiles to an approximate division, which rounds some values to the other fp8 neighbour
    q = tl.minimum(tl.maximum(tl.math.div_rn(x, scale), -_FP8_MAX), _FP8_MAX)
    tl.store(q_ptr + row * stride_q + cols, q.to(q_ptr.dtype.element_ty), mask=ok)
    tl.store(scale_ptr + row, scale)


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, scale_ptr, n, stride_x, stride_q, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    ok = cols < n
    x = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
    store_fp8_row(q_ptr, scale_ptr, row, cols, ok, x, stride_q)


def fp8_rows_like(x: torch.Tensor, n: int) -> Fp8Rows:
    """Uninitialised fp8 rows [len(x), n] and their scales, on x's device."""
    return Fp8Rows(torch.empty((x.shape[0], n), dtype=FP8, device=x.device),
                   torch.empty((x.shape[0], 1), dtype=torch.float32, device=x.device))


def row_warps(block: int) -> int:
    """Warps for a program that holds one whole row of `block` elements."""
    return max(4, min(16, block // 1024))


def quantize_rows(x: torch.Tensor) -> Fp8Rows:
    """x [M, K] (16/32-bit float, contiguous rows) -> fp8 [M, K] and float32 scales [M, 1]."""
    if x.dim() != 2 or x.stride(-1) != 1:
        raise ValueError(f"quantize_rows wants [M, K] with contiguous rows, got {tuple(x.shape)} {x.stride()}")
    m, n = x.shape
    out = fp8_rows_like(x, n)
    if m and n:
        block = triton.next_power_of_2(n)
        _quantize_rows_kernel[(m,)](x, out.q, out.scale, n, x.stride(0), out.q.stride(0), BLOCK=block,
                                    num_warps=row_warps(block))
    return out
