"""Fused elementwise Triton kernels for the Llama layer: residual add + RMSNorm, RoPE, SiLU-and-mul.

Each kernel reads its inputs once, computes in fp32 and writes once, where the torch path in
agent/model/llama.py (the reference) makes several passes. Rounding follows transformers: the residual
sum is rounded to the storage dtype before it is normalized, the normalized row is rounded before
the weight multiplies it. Nothing syncs with the host, so the calls can sit in a CUDA graph.
Without CUDA the kernels run on CPU tensors in Triton's interpreter (slow; for tests).

`python -m llmbench.agent.commands.bench_kernels fused` (CUDA) times each kernel against the torch
path at Llama-3.1-8B shapes.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when triton is first imported

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from llmbench.agent.kernels.fp8_format import Fp8Rows  # noqa: E402
from llmbench.agent.kernels.fp8_quant import fp8_rows_like, row_warps, store_fp8_row  # noqa: E402

DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _add_rmsnorm_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, scale_ptr, res_out_ptr, n, eps,
    stride_x, stride_res, stride_out, stride_res_out,
    HAS_RESIDUAL: tl.constexpr, FP8_OUT: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    ok = cols < n
    x = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + row * stride_res + cols, mask=ok, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x_ptr.dtype.element_ty)  # torch's rounded add
        tl.store(res_out_ptr + row * stride_res_out + cols, x, mask=ok)
    xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, 0) / n + eps)
    normed = (xf * rstd).to(x_ptr.dtype.element_ty).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    y = (w * normed).to(x_ptr.dtype.element_ty)
    if FP8_OUT:
        store_fp8_row(out_ptr, scale_ptr, row, cols, ok, y.to(tl.float32), stride_out)
    else:
        tl.store(out_ptr + row * stride_out + cols, y, mask=ok)


@triton.jit
def _rope_rows(ptr, row, stride_t, stride_h, heads, c, s, HALF: tl.constexpr, BLOCK_H: tl.constexpr,
               BLOCK_D: tl.constexpr):
    """Rotate all heads of one token in place: (x1, x2) -> (x1 c - x2 s, x2 c + x1 s)."""
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    ok = (h < heads)[:, None] & (d < HALF)[None, :]
    p1 = ptr + row * stride_t + h[:, None] * stride_h + d[None, :]
    x1 = tl.load(p1, mask=ok, other=0.0).to(tl.float32)
    x2 = tl.load(p1 + HALF, mask=ok, other=0.0).to(tl.float32)
    tl.store(p1, (x1 * c - x2 * s).to(ptr.dtype.element_ty), mask=ok)
    tl.store(p1 + HALF, (x2 * c + x1 * s).to(ptr.dtype.element_ty), mask=ok)


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, pos_ptr, cos_ptr, sin_ptr, q_heads, k_heads,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_cos, stride_sin,
    HALF: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + row).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    # the tables hold cat(freqs, freqs): the first half of a row is all there is
    c = tl.load(cos_ptr + pos * stride_cos + d, mask=d < HALF, other=0.0).to(tl.float32)[None, :]
    s = tl.load(sin_ptr + pos * stride_sin + d, mask=d < HALF, other=0.0).to(tl.float32)[None, :]
    _rope_rows(q_ptr, row, stride_qt, stride_qh, q_heads, c, s, HALF, BLOCK_HQ, BLOCK_D)
    _rope_rows(k_ptr, row, stride_kt, stride_kh, k_heads, c, s, HALF, BLOCK_HK, BLOCK_D)


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, scale_ptr, n, stride_x, stride_out, FP8_OUT: tl.constexpr,
                         BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < n
    gate = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + n + cols, mask=ok, other=0.0).to(tl.float32)
    y = (gate / (1.0 + tl.exp(-gate)) * up).to(x_ptr.dtype.element_ty)
    if FP8_OUT:  # the launch gives one program the whole row
        store_fp8_row(out_ptr, scale_ptr, row, cols, ok, y.to(tl.float32), stride_out)
    else:
        tl.store(out_ptr + row * stride_out + cols, y, mask=ok)


def _num_warps(block: int) -> int:
    return max(1, min(16, block // 512))


def _check_rows(name: str, x: torch.Tensor) -> None:
    if x.dim() != 2 or x.stride(-1) != 1:
        raise ValueError(f"{name} must be 2-D [tokens, n] with a contiguous last dimension, "
                         f"got shape {tuple(x.shape)} strides {x.stride()}")
    if x.dtype not in DTYPES:
        raise ValueError(f"{name} dtype must be float16, bfloat16 or float32, got {x.dtype}")


def _out(name: str, out: torch.Tensor | None, like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if out is None:
        return like.new_empty(shape)
    if out.shape != shape or out.dtype != like.dtype or out.dim() != 2 or out.stride(-1) != 1:
        raise ValueError(f"{name} must be {like.dtype} {shape} with a contiguous last dimension, got "
                         f"{out.dtype} {tuple(out.shape)} strides {out.stride()}")
    return out


def add_rmsnorm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float, *,
                out: torch.Tensor | None = None,
                residual_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual [T, N]; weight [N]. Returns (rmsnorm(x + residual) * weight, x + residual) in x's
    dtype, written to out/residual_out (fresh by default); with residual None, (rmsnorm(x) * weight, x)."""
    _check_rows("x", x)
    out = _out("out", out, x, tuple(x.shape))
    return out, _launch_add_rmsnorm(x, residual, weight, eps, out, None, residual_out)


def add_rmsnorm_fp8(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                    eps: float) -> tuple[Fp8Rows, torch.Tensor]:
    """add_rmsnorm with the normalized rows (rounded to x's dtype first) handed over in fp8."""
    _check_rows("x", x)
    rows = fp8_rows_like(x, x.shape[1])
    return rows, _launch_add_rmsnorm(x, residual, weight, eps, rows.q, rows.scale, None)


def _launch_add_rmsnorm(x, residual, weight, eps, out, scale, residual_out) -> torch.Tensor:
    """Checks the rest, launches; returns the residual stream x + residual (x itself without one)."""
    n = x.shape[1]
    if weight.shape != (n,) or weight.dtype != x.dtype:
        raise ValueError(f"weight must be {x.dtype} [{n}], got {weight.dtype} {tuple(weight.shape)}")
    res, res_out = x, x
    if residual is not None:
        _check_rows("residual", residual)
        if residual.shape != x.shape or residual.dtype != x.dtype:
            raise ValueError(f"residual {residual.dtype} {tuple(residual.shape)} does not match x "
                             f"{x.dtype} {tuple(x.shape)}")
        res, res_out = residual, _out("residual_out", residual_out, x, tuple(x.shape))
    if x.shape[0]:
        block = triton.next_power_of_2(n)
        _add_rmsnorm_kernel[(x.shape[0],)](
            x, res, weight, out, out if scale is None else scale, res_out, n, eps,
            x.stride(0), res.stride(0), out.stride(0), res_out.stride(0),
            HAS_RESIDUAL=residual is not None, FP8_OUT=scale is not None, BLOCK=block,
            num_warps=_num_warps(block))
    return res_out


def rope_(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor,
          sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama's rotate_half rotation of q [T, Hq, D] and k [T, Hkv, D] in place (both may be strided
    views, e.g. of a fused QKV output, with a contiguous last dimension), at positions [T] (int32 or
    int64, any order), from cos/sin tables [max_position, D] whose two halves are equal."""
    if q.dim() != 3 or k.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"rope wants q [T, Hq, D] and k [T, Hkv, D], got {tuple(q.shape)}, {tuple(k.shape)}")
    head_dim = q.shape[2]
    if head_dim % 2 or q.stride(-1) != 1 or k.stride(-1) != 1:
        raise ValueError(f"head_dim must be even with contiguous q/k rows, got {head_dim}, strides "
                         f"{q.stride()}, {k.stride()}")
    if q.dtype not in DTYPES or k.dtype != q.dtype:
        raise ValueError(f"q and k must share a float16/bfloat16/float32 dtype, got {q.dtype}, {k.dtype}")
    if positions.shape != (q.shape[0],) or positions.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"positions must be int32/int64 [{q.shape[0]}], got {positions.dtype} "
                         f"{tuple(positions.shape)}")
    if cos.dim() != 2 or cos.shape[1] != head_dim or sin.shape != cos.shape or cos.stride(-1) != 1 \
            or sin.stride(-1) != 1:
        raise ValueError(f"cos/sin must be [max_position, {head_dim}] with contiguous rows, got "
                         f"{tuple(cos.shape)}, {tuple(sin.shape)}")
    if q.shape[0]:
        half = head_dim // 2
        _rope_kernel[(q.shape[0],)](
            q, k, positions, cos, sin, q.shape[1], k.shape[1],
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), cos.stride(0), sin.stride(0),
            HALF=half, BLOCK_D=triton.next_power_of_2(half), BLOCK_HQ=triton.next_power_of_2(q.shape[1]),
            BLOCK_HK=triton.next_power_of_2(k.shape[1]), num_warps=4)
    return q, k


SILU_BLOCK = 1024


def silu_and_mul(x: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """x [T, 2I] = [gate | up] -> silu(gate) * up [T, I] in x's dtype, written to out (fresh by default)."""
    n = _check_gate_up(x)
    out = _out("out", out, x, (x.shape[0], n))
    if x.shape[0] and n:
        block = min(SILU_BLOCK, triton.next_power_of_2(n))
        _silu_and_mul_kernel[(x.shape[0], triton.cdiv(n, block))](
            x, out, out, n, x.stride(0), out.stride(0), FP8_OUT=False, BLOCK=block, num_warps=4)
    return out


def silu_and_mul_fp8(x: torch.Tensor) -> Fp8Rows:
    """silu_and_mul with the rows (rounded to x's dtype first) handed over in fp8."""
    n = _check_gate_up(x)
    rows = fp8_rows_like(x, n)
    if x.shape[0] and n:
        block = triton.next_power_of_2(n)
        _silu_and_mul_kernel[(x.shape[0], 1)](
            x, rows.q, rows.scale, n, x.stride(0), rows.q.stride(0), FP8_OUT=True, BLOCK=block,
            num_warps=row_warps(block))
    return rows


def _check_gate_up(x: torch.Tensor) -> int:
    _check_rows("x", x)
    if x.shape[1] % 2:
        raise ValueError(f"silu_and_mul wants an even last dimension [gate | up], got {x.shape[1]}")
    return x.shape[1] // 2
