"""Triton attention over the paged KV cache: split-KV decode and causal (chunked) prefill, whose chunks
read their own keys from the step's fresh K/V and only the positions before them from the cache.

Token p of sequence b lives in cache[block_tables[b, p // block_size], p % block_size].
Both kernels accumulate in fp32 and use exp2 with log2(e) folded into the scale. Nothing here
syncs with the host or allocates memory whose size depends on tensor values, so both calls can be
captured in a CUDA graph. Without CUDA the kernels run on CPU tensors in Triton's interpreter
(slow; for tests), provided this module is the first to import triton.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when triton is first imported

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from llmbench.agent.kernels import limits  # noqa: E402

LOG2E = 1.4426950408889634


def _fix_interpreter_index() -> None:
    """triton 3.6's interpreter int()s 1-element arrays, which numpy >= 2.4 refuses, so loops with
    tensor bounds fail (triton-lang/triton#9171); index through squeeze() as the upstream fix does."""
    from triton.runtime import interpreter

    patch_tensor = interpreter._patch_lang_tensor

    def patch_tensor_fixed(tensor, scope) -> None:
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patch_tensor_fixed


if triton.knobs.runtime.interpret:
    _fix_interpreter_index()


@dataclass(frozen=True)
class KernelConfig:
    block_m: int  # query rows per program (prefill; decode takes its padded head group)
    block_n: int  # keys per loop iteration
    num_warps: int
    num_stages: int


@triton.jit
def _paged_kv(k_ptr, v_ptr, bt_row, n, n_ok, kvh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt,
              stride_vh, HEAD_DIM: tl.constexpr, PAGE: tl.constexpr):
    """K and V tiles [len(n), HEAD_DIM] of cached positions n (zeros where not n_ok)."""
    d = tl.arange(0, HEAD_DIM)
    page = tl.load(bt_row + n // PAGE, mask=n_ok, other=0).to(tl.int64)
    slot = n % PAGE
    k = tl.load(k_ptr + (page * stride_kb + slot * stride_kt + kvh * stride_kh)[:, None] + d[None, :],
                mask=n_ok[:, None], other=0.0)
    v = tl.load(v_ptr + (page * stride_vb + slot * stride_vt + kvh * stride_vh)[:, None] + d[None, :],
                mask=n_ok[:, None], other=0.0)
    return k, v


@triton.jit
def _cached_tile(acc, m_i, l_i, q, k_ptr, v_ptr, bt_row, n0, end, kvh, qk_scale,
                 stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                 HEAD_DIM: tl.constexpr, PAGE: tl.constexpr, BLOCK_N: tl.constexpr,
                 MASKED: tl.constexpr, PRECISION: tl.constexpr):
    """Cached keys n0..n0+BLOCK_N, those < end visible (MASKED: the tile may pass end)."""
    n = n0 + tl.arange(0, BLOCK_N)
    k, v = _paged_kv(k_ptr, v_ptr, bt_row, n, n < end, kvh, stride_kb, stride_kt, stride_kh,
                     stride_vb, stride_vt, stride_vh, HEAD_DIM, PAGE)
    return _attend(acc, m_i, l_i, q, k, v, (n < end)[None, :], qk_scale, MASKED, PRECISION)


@triton.jit
def _cached_range(acc, m_i, l_i, q, k_ptr, v_ptr, bt_row, start, end, kvh, qk_scale,
                  stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                  HEAD_DIM: tl.constexpr, PAGE: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """Cached keys start..end, all visible: whole tiles unmasked, only the last, partial one masked."""
    full_end = start + tl.maximum(end - start, 0) // BLOCK_N * BLOCK_N
    for n0 in range(start, full_end, BLOCK_N):
        acc, m_i, l_i = _cached_tile(acc, m_i, l_i, q, k_ptr, v_ptr, bt_row, n0, end, kvh, qk_scale,
                                     stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                                     HEAD_DIM, PAGE, BLOCK_N, False, PRECISION)
    for n0 in range(full_end, end, BLOCK_N):
        acc, m_i, l_i = _cached_tile(acc, m_i, l_i, q, k_ptr, v_ptr, bt_row, n0, end, kvh, qk_scale,
                                     stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                                     HEAD_DIM, PAGE, BLOCK_N, True, PRECISION)
    return acc, m_i, l_i


@triton.jit
def _attend(acc, m_i, l_i, q, k, v, keep, qk_scale, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    """One online-softmax step of q over a K/V tile (an fp8 cache widens to q's type here); MASKED:
    scores where not keep [rows, keys] are dropped."""
    s = tl.dot(q, tl.trans(k.to(q.dtype)), input_precision=PRECISION) * qk_scale
    if MASKED:
        s = tl.where(keep, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v.to(q.dtype), input_precision=PRECISION)
    return acc, m_new, l_i


# Ints that change from step to step (block-table width, split count) are not specialized: every new
# specialization (== 1, multiple of 16) is a ~1 s compile in the middle of a run.
@triton.jit(do_not_specialize=["num_splits", "stride_btb"])
def _decode_split_kernel(
    q_ptr, k_ptr, v_ptr, bt_ptr, ctx_ptr, out_ptr, part_o_ptr, part_lse_ptr, qk_scale, num_splits,
    stride_qb, stride_qh, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
    stride_btb, stride_ob, stride_oh,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE: tl.constexpr,
    BLOCK_N: tl.constexpr, DIRECT: tl.constexpr, PRECISION: tl.constexpr, FP16_DOT: tl.constexpr,
):
    """One (sequence, kv head, split): all GROUP query heads of the kv head share each K/V tile.
    FP16_DOT: the dots run in fp16 (q converted once), so e4m3 K/V widen in one instruction per pair;
    widening to bf16 takes more instructions."""
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    ctx = tl.load(ctx_ptr + b)
    # Each sequence spreads its own context over the splits (in BLOCK_N-aligned chunks), so a short
    # sequence in a batch with a long bound still splits its work evenly.
    chunk = tl.cdiv(tl.cdiv(ctx, num_splits), BLOCK_N) * BLOCK_N
    start = split * chunk
    end = tl.minimum(start + chunk, ctx)
    rows = tl.arange(0, GROUP_PAD)
    heads = kvh * GROUP + rows
    row_ok = rows < GROUP
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None], other=0.0)
    if FP16_DOT:
        q = q.to(tl.float16)
    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    acc, m_i, l_i = _cached_range(acc, m_i, l_i, q, k_ptr, v_ptr, bt_ptr + b * stride_btb, start, end, kvh,
                                  qk_scale, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                                  HEAD_DIM, PAGE, BLOCK_N, PRECISION)
    # l_i >= 1 after any key (the max scores exp2(0)); an empty range (context 0, a split past the
    # end) leaves l_i == 0 and m_i == -inf, so clamping to 1 gives zeros and lse == -inf.
    l_i = tl.maximum(l_i, 1.0)
    o = acc / l_i[:, None]
    if DIRECT:
        tl.store(out_ptr + b * stride_ob + heads[:, None] * stride_oh + d[None, :],
                 o.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])
    else:
        part = (b * GROUP * tl.num_programs(1) + heads) * num_splits + split
        tl.store(part_o_ptr + part[:, None] * HEAD_DIM + d[None, :], o, mask=row_ok[:, None])
        tl.store(part_lse_ptr + part, m_i + tl.log2(l_i), mask=row_ok)


@triton.jit(do_not_specialize=["num_splits"])
def _decode_reduce_kernel(
    part_o_ptr, part_lse_ptr, out_ptr, num_splits, stride_ob, stride_oh,
    HEAD_DIM: tl.constexpr, SPLITS_PAD: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    s = tl.arange(0, SPLITS_PAD)
    d = tl.arange(0, HEAD_DIM)
    s_ok = s < num_splits
    part = (b * tl.num_programs(1) + h) * num_splits + s
    lse = tl.load(part_lse_ptr + part, mask=s_ok, other=float("-inf"))
    m = tl.max(lse, 0)
    w = tl.exp2(lse - tl.where(m == float("-inf"), 0.0, m))
    o = tl.load(part_o_ptr + part[:, None] * HEAD_DIM + d[None, :], mask=s_ok[:, None], other=0.0)
    den = tl.sum(w, 0)
    res = tl.sum(o * w[:, None], 0) / tl.where(den == 0.0, 1.0, den)
    tl.store(out_ptr + b * stride_ob + h * stride_oh + d, res.to(out_ptr.dtype.element_ty))


@triton.jit
def _own_tile(acc, m_i, l_i, q, kn_row, vn_row, j0, q_len, rows, qk_scale, stride_knt, stride_vnt,
              HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    """The chunk's fresh keys j0.. (MASKED: causal within the query tile, and the chunk's end)."""
    j = j0 + tl.arange(0, BLOCK_N)
    d = tl.arange(0, HEAD_DIM)
    j_ok = j < q_len
    k = tl.load(kn_row + j[:, None] * stride_knt + d[None, :], mask=j_ok[:, None], other=0.0)
    v = tl.load(vn_row + j[:, None] * stride_vnt + d[None, :], mask=j_ok[:, None], other=0.0)
    keep = (j[None, :] <= rows[:, None]) & j_ok[None, :]
    return _attend(acc, m_i, l_i, q, k, v, keep, qk_scale, MASKED, PRECISION)


@triton.jit(do_not_specialize=["stride_btb"])
def _prefill_kernel(
    q_ptr, kn_ptr, vn_ptr, k_ptr, v_ptr, bt_ptr, cu_q_ptr, seq_lens_ptr, out_ptr, qk_scale,
    stride_qt, stride_qh, stride_knt, stride_knh, stride_vnt, stride_vnh,
    stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh, stride_btb, stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):
    """One (query head, query tile, sequence); heads of one kv head are neighbours for L2 reuse.
    Keys before the chunk come from the paged cache, the chunk's own from its fresh K/V rows: those
    are contiguous and in the model's type, where the cache needs a block-table gather and, for an
    fp8 cache, a widening per tile."""
    h = tl.program_id(0)
    tile = tl.num_programs(1) - 1 - tl.program_id(1)  # the longest (last) tiles start first
    b = tl.program_id(2)
    q_start = tl.load(cu_q_ptr + b)
    q_len = tl.load(cu_q_ptr + b + 1) - q_start
    if tile * BLOCK_M >= q_len:
        return
    prefix = tl.load(seq_lens_ptr + b) - q_len  # cached positions before the chunk
    kvh = h // GROUP
    rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # query rows within the chunk
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + (q_start + rows)[:, None] * stride_qt + h * stride_qh + d[None, :],
                mask=(rows < q_len)[:, None], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # Every row sees the whole prefix.
    acc, m_i, l_i = _cached_range(acc, m_i, l_i, q, k_ptr, v_ptr, bt_ptr + b * stride_btb, 0, prefix, kvh,
                                  qk_scale, stride_kb, stride_kt, stride_kh, stride_vb, stride_vt, stride_vh,
                                  HEAD_DIM, PAGE, BLOCK_N, PRECISION)
    # The chunk's own keys before the tile are visible to all its rows (BLOCK_M is a multiple of
    # BLOCK_N); those within the tile take the causal mask.
    kn_row = kn_ptr + q_start * stride_knt + kvh * stride_knh
    vn_row = vn_ptr + q_start * stride_vnt + kvh * stride_vnh
    for j0 in range(0, tile * BLOCK_M, BLOCK_N):
        acc, m_i, l_i = _own_tile(acc, m_i, l_i, q, kn_row, vn_row, j0, q_len, rows, qk_scale,
                                  stride_knt, stride_vnt, HEAD_DIM, BLOCK_N, False, PRECISION)
    for j0 in range(tile * BLOCK_M, tl.minimum(tile * BLOCK_M + BLOCK_M, q_len), BLOCK_N):
        acc, m_i, l_i = _own_tile(acc, m_i, l_i, q, kn_row, vn_row, j0, q_len, rows, qk_scale,
                                  stride_knt, stride_vnt, HEAD_DIM, BLOCK_N, True, PRECISION)
    o = acc / l_i[:, None]
    tl.store(out_ptr + (q_start + rows)[:, None] * stride_ot + h * stride_oh + d[None, :],
             o.to(out_ptr.dtype.element_ty), mask=(rows < q_len)[:, None])


MIN_SPLIT_TOKENS = 128  # a split shorter than this costs more in its reduction than it saves
MAX_SPLITS = 64


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _tile_config(rows: int, head_dim: int, dtype: torch.dtype, device: torch.device) -> KernelConfig:
    """Tiles checked by compiling for sm_90: no register spills for 16-bit types up to head_dim 256."""
    if device.type != "cuda":  # Triton interpreter: small tiles keep CPU runs fast
        return KernelConfig(min(rows, 32), 16, 4, 1)
    if dtype == torch.float32:  # exact fp32 dots run on the FMA units: small tiles
        return KernelConfig(min(rows, 32), 32 if head_dim <= 128 else 16, 8, 2)
    if head_dim <= 128:
        return KernelConfig(rows, 64, 8 if rows >= 64 else 4, 3)
    return KernelConfig(min(rows, 64), max(16, 8192 // head_dim), 8 if rows >= 64 else 4, 2)


def _decode_config(rows: int, head_dim: int, dtype: torch.dtype, kv_dtype: torch.dtype,
                   device: torch.device) -> KernelConfig:
    if device.type == "cuda" and kv_dtype == torch.float8_e4m3fn and head_dim <= 128:
        # fp8 tiles are half the bytes, so a program's loop (widen, dot, softmax) is what limits: two
        # warps per program, more of them per SM (H100 sweep, `bench_attention --sweep`)
        return KernelConfig(rows, 64, 2, 3)
    return _tile_config(rows, head_dim, dtype, device)


def decode_splits(batch: int, kv_heads: int, max_context: int, device: torch.device) -> int:
    """Splits per (sequence, kv head) so that about two programs run per SM; host-only math. (On an H100
    at context 1024, batch 64 and 512 both ran fastest unsplit, 6-18 % ahead of two splits.)"""
    wanted = triton.cdiv(2 * _num_sms(device), batch * kv_heads)
    return max(1, min(wanted, triton.cdiv(max_context, MIN_SPLIT_TOKENS), MAX_SPLITS))


def _check(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
           out: torch.Tensor | None) -> tuple[int, int, torch.Tensor]:
    """Validate what both calls share; returns (query heads per kv head, head_dim, out)."""
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"k_cache and v_cache must both be [num_blocks, block_size, kv_heads, head_dim], "
                         f"got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    if not limits.takes_head_dim(head_dim):
        raise ValueError(f"head_dim must be a power of two >= 16, got {head_dim}")
    if q.shape[-1] != head_dim or q.shape[-2] % kv_heads:
        raise ValueError(f"q heads/dim {tuple(q.shape[-2:])} do not fit {kv_heads} kv heads of dim {head_dim}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q dtype must be float16, bfloat16 or float32, got {q.dtype}")
    if k_cache.dtype != v_cache.dtype or k_cache.dtype not in (q.dtype, torch.float8_e4m3fn):
        raise ValueError(f"cache dtype {k_cache.dtype}/{v_cache.dtype} must be q's dtype {q.dtype} or "
                         f"both float8_e4m3fn")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("q, k_cache and v_cache need a contiguous last (head_dim) dimension")
    if block_tables.dim() != 2 or block_tables.dtype != torch.int32:
        raise ValueError(f"block_tables must be int32 [batch, max_blocks], got {block_tables.dtype} "
                         f"{tuple(block_tables.shape)}")
    if out is None:
        out = torch.empty_like(q)
    elif out.shape != q.shape or out.dtype != q.dtype or out.stride(-1) != 1:
        raise ValueError(f"out must be {q.dtype} {tuple(q.shape)} with a contiguous last dimension, "
                         f"got {out.dtype} {tuple(out.shape)} strides {out.stride()}")
    return q.shape[-2] // kv_heads, head_dim, out


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"  # fp32 inputs must not be rounded to tf32


def paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, scale: float, out: torch.Tensor | None = None, *,
                 max_context: int | None = None, num_splits: int | None = None,
                 config: KernelConfig | None = None, fp16_dot: bool | None = None) -> torch.Tensor:
    """One new query token per sequence over its first context_lens[b] cached tokens.

    q: [B, Hq, D]; caches: [num_blocks, block_size, Hkv, D]; block_tables: int32 [B, max_blocks];
    context_lens: int32 [B]. max_context (default: the block table's span) only steers, with the
    batch size, the number of KV splits (override: num_splits). Context 0 gives zeros. fp16_dot
    (default: for a bf16 q over an fp8 cache, on CUDA) runs the dots in fp16.
    Returns [B, Hq, D] in q's dtype.
    """
    group, head_dim, out = _check(q, k_cache, v_cache, block_tables, out)
    if q.dim() != 3 or context_lens.shape != (q.shape[0],) or block_tables.shape[0] != q.shape[0]:
        raise ValueError(f"decode wants q [B, Hq, D], context_lens [B], block_tables [B, n]; got "
                         f"{tuple(q.shape)}, {tuple(context_lens.shape)}, {tuple(block_tables.shape)}")
    batch, q_heads, _ = q.shape
    kv_heads, page = k_cache.shape[2], k_cache.shape[1]
    if batch == 0:
        return out
    if max_context is None:
        max_context = block_tables.shape[1] * page
    splits = num_splits or decode_splits(batch, kv_heads, max_context, q.device)
    group_pad = max(16, triton.next_power_of_2(group))
    cfg = config or _decode_config(group_pad, head_dim, q.dtype, k_cache.dtype, q.device)
    if fp16_dot is None:
        fp16_dot = q.is_cuda and q.dtype == torch.bfloat16 and k_cache.dtype == torch.float8_e4m3fn
    part_o = q.new_empty((batch, q_heads, splits, head_dim), dtype=torch.float32) if splits > 1 else out
    part_lse = q.new_empty((batch, q_heads, splits), dtype=torch.float32) if splits > 1 else out
    _decode_split_kernel[(batch, kv_heads, splits)](
        q, k_cache, v_cache, block_tables, context_lens, out, part_o, part_lse, scale * LOG2E, splits,
        q.stride(0), q.stride(1), *k_cache.stride()[:3], *v_cache.stride()[:3],
        block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=group, GROUP_PAD=group_pad, HEAD_DIM=head_dim, PAGE=page, BLOCK_N=cfg.block_n,
        DIRECT=splits == 1, PRECISION=_precision(q.dtype), FP16_DOT=fp16_dot, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages)
    if splits > 1:
        _decode_reduce_kernel[(batch, q_heads)](
            part_o, part_lse, out, splits, out.stride(0), out.stride(1),
            HEAD_DIM=head_dim, SPLITS_PAD=triton.next_power_of_2(splits), num_warps=4)
    return out


def paged_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                  v_cache: torch.Tensor, block_tables: torch.Tensor, cu_seqlens_q: torch.Tensor,
                  seq_lens: torch.Tensor, max_seqlen_q: int, scale: float, out: torch.Tensor | None = None, *,
                  config: KernelConfig | None = None) -> torch.Tensor:
    """Causal attention of packed query chunks over their cached prefix and their own keys.

    q: [T, Hq, D] holding B chunks delimited by cu_seqlens_q (int32 [B+1]); k, v: [T, Hkv, D] the
    chunks' own keys and values in q's type; seq_lens: int32 [B], each sequence's length including its
    chunk, so query i of chunk b sits at position seq_lens[b] - q_len_b + i and the positions before
    the chunk are read from the cache. max_seqlen_q bounds every q_len_b. Returns [T, Hq, D].
    """
    group, head_dim, out = _check(q, k_cache, v_cache, block_tables, out)
    batch = seq_lens.shape[0]
    if q.dim() != 3 or cu_seqlens_q.shape != (batch + 1,) or block_tables.shape[0] != batch:
        raise ValueError(f"prefill wants q [T, Hq, D], cu_seqlens_q [B+1], seq_lens [B], block_tables [B, n]; "
                         f"got {tuple(q.shape)}, {tuple(cu_seqlens_q.shape)}, {batch}, {tuple(block_tables.shape)}")
    own = (q.shape[0], k_cache.shape[2], head_dim)
    if k.shape != own or v.shape != own or k.dtype != q.dtype or v.dtype != q.dtype \
            or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError(f"prefill wants the chunks' own k and v as {q.dtype} {own} with a contiguous last "
                         f"dimension, got {k.dtype} {tuple(k.shape)} and {v.dtype} {tuple(v.shape)}")
    if batch == 0 or max_seqlen_q <= 0 or q.shape[0] == 0:
        return out
    cfg = config or _tile_config(128, head_dim, q.dtype, q.device)
    if cfg.block_m % cfg.block_n:
        raise ValueError(f"prefill tiles need block_m a multiple of block_n, got {cfg}")
    grid = (q.shape[1], triton.cdiv(max_seqlen_q, cfg.block_m), batch)
    _prefill_kernel[grid](
        q, k, v, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, out, scale * LOG2E,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        *k_cache.stride()[:3], *v_cache.stride()[:3], block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=group, HEAD_DIM=head_dim, PAGE=k_cache.shape[1], BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        PRECISION=_precision(q.dtype), num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out
