"""Triton paged attention vs a float64 dense reference (CPU: Triton interpreter; GPU when present)."""

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Without a GPU the kernels run in Triton's interpreter (switched on in conftest.py).
pytest.importorskip("triton")
from llmbench.agent.kernels import paged_attention as ta  # noqa: E402

POISON = float("nan")


def make_cache(seq_lens, kv_heads, head_dim, page, dtype, gen):
    """Random K/V in shuffled, non-contiguous blocks, with spare blocks and unused table slots."""
    need = [-(-n // page) for n in seq_lens]
    num_blocks = sum(need) + 3
    perm = torch.randperm(num_blocks, generator=gen).to(torch.int32)
    width = max(need + [1]) + 1
    tables = torch.full((len(seq_lens), width), num_blocks + 100, dtype=torch.int32)  # junk past the end
    used = 0
    for b, n in enumerate(need):
        tables[b, :n] = perm[used:used + n]
        used += n
    k = torch.randn(num_blocks, page, kv_heads, head_dim, generator=gen, dtype=torch.float64)
    v = torch.randn(num_blocks, page, kv_heads, head_dim, generator=gen, dtype=torch.float64)
    return k, v, tables


def dense_kv(cache, table, length):
    """[length, Hkv, D] K or V of one sequence, gathered position by position."""
    page = cache.shape[1]
    return torch.stack([cache[table[p // page], p % page] for p in range(length)]) if length else \
        cache.new_zeros(0, *cache.shape[2:])


def reference(q, k, v, positions, scale):
    """q [n, Hq, D] at absolute positions; k, v [L, Hkv, D]; causal softmax in float64."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale
    visible = torch.arange(k.shape[0])[None, :] <= positions[:, None]
    scores = scores.masked_fill(~visible[None], float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


def strided(x, dtype):
    """x on DEVICE as a head-slice of a wider buffer, like q cut out of a fused QKV projection."""
    wide = torch.zeros(*x.shape[:-2], x.shape[-2] + 2, x.shape[-1], dtype=dtype, device=DEVICE)
    wide[..., 1:-1, :] = x.to(DEVICE, dtype)
    return wide[..., 1:-1, :]


def poisoned_out(shape, dtype):
    """(out view, its buffer): NaN everywhere, with an extra head either side that must stay NaN."""
    buf = torch.full((*shape[:-2], shape[-2] + 2, shape[-1]), POISON, dtype=dtype, device=DEVICE)
    return buf[..., 1:-1, :], buf


def check_written(buf):
    buf = buf.cpu()
    assert buf[..., [0, -1], :].isnan().all(), "wrote outside out"
    assert not buf[..., 1:-1, :].isnan().any(), "some outputs were never written"
    return buf[..., 1:-1, :]


def rel_err(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


# The interpreter multiplies bf16 bit patterns in tl.dot, so bf16 is checked on CUDA only.
HALF = [torch.float16, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    DEVICE == "cpu", reason="Triton interpreter has no bf16 tl.dot"))]
TOL = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 3e-2}


def cache_values(k, v, kv_dtype):
    """K/V as the cache will hold them, in float64 for the reference."""
    return k.to(kv_dtype).double(), v.to(kv_dtype).double()


def run_decode(context_lens, q_heads, kv_heads, head_dim=32, page=16, dtype=torch.float32, seed=0,
               kv_dtype=None, **kw):
    gen = torch.Generator().manual_seed(seed)
    k, v, tables = make_cache(context_lens, kv_heads, head_dim, page, dtype, gen)
    kv_dtype = kv_dtype or dtype
    k, v = cache_values(k, v, kv_dtype)
    q = torch.randn(len(context_lens), q_heads, head_dim, generator=gen, dtype=torch.float64)
    scale = head_dim ** -0.5
    out, buf = poisoned_out(q.shape, dtype)
    ta.paged_decode(strided(q, dtype), k.to(DEVICE, kv_dtype), v.to(DEVICE, kv_dtype), tables.to(DEVICE),
                    torch.tensor(context_lens, dtype=torch.int32, device=DEVICE), scale, out=out, **kw)
    out = check_written(buf)
    for b, n in enumerate(context_lens):
        if n == 0:
            assert (out[b] == 0).all()
            continue
        ref = reference(q[b:b + 1], dense_kv(k, tables[b], n), dense_kv(v, tables[b], n),
                        torch.tensor([n - 1]), scale)
        assert rel_err(out[b:b + 1], ref) < TOL[dtype], f"sequence {b} (context {n})"


@pytest.mark.parametrize("q_heads,kv_heads", [(4, 4), (8, 2), (4, 1), (12, 1)])
@pytest.mark.parametrize("num_splits", [1, 3])
def test_decode_matches_reference(q_heads, kv_heads, num_splits):
    run_decode([1, 15, 16, 17, 50, 130], q_heads, kv_heads, num_splits=num_splits, seed=q_heads + num_splits)


def test_decode_auto_splits_page_sizes_and_empty_context():
    run_decode([0, 7, 8, 9, 100], 8, 2, head_dim=16, page=8, seed=1)
    run_decode([33, 64, 200], 4, 4, head_dim=64, page=32, seed=2, max_context=256)
    run_decode([5, 300], 2, 1, head_dim=16, page=16, seed=3, num_splits=8)  # more splits than tiles


@pytest.mark.parametrize("dtype", HALF)
def test_decode_half_precision(dtype):
    run_decode([3, 40, 97], 8, 2, dtype=dtype, num_splits=2, seed=4)


def test_decode_split_choice_is_host_only_and_bounded():
    cpu = torch.device("cpu")
    assert ta.decode_splits(1, 1, 1, cpu) == 1
    assert ta.decode_splits(1, 1, 100_000, cpu) == 2  # two programs per "SM" (1 on CPU)
    assert ta.decode_splits(512, 8, 1024, cpu) == 1


def run_prefill(seq_lens, q_lens, q_heads, kv_heads, head_dim=32, page=16, dtype=torch.float32, seed=0,
                kv_dtype=None, **kw):
    """Each chunk attends over its cached prefix and its own fresh K/V: the cache slots of the chunk
    hold NaN, so reading them instead of the fresh rows fails the check."""
    gen = torch.Generator().manual_seed(seed)
    k, v, tables = make_cache(seq_lens, kv_heads, head_dim, page, dtype, gen)
    kv_dtype = kv_dtype or dtype
    k, v = cache_values(k, v, kv_dtype)
    total = sum(q_lens)
    q = torch.randn(total, q_heads, head_dim, generator=gen, dtype=torch.float64)
    k_own = torch.randn(total, kv_heads, head_dim, generator=gen, dtype=torch.float64).to(dtype).double()
    v_own = torch.randn(total, kv_heads, head_dim, generator=gen, dtype=torch.float64).to(dtype).double()
    cu = torch.tensor([0] + q_lens, dtype=torch.int32).cumsum(0).to(torch.int32)
    for b, (n, m) in enumerate(zip(seq_lens, q_lens)):
        for p in range(n - m, n):
            k[tables[b, p // page], p % page] = v[tables[b, p // page], p % page] = POISON
    scale = 0.3
    out, buf = poisoned_out(q.shape, dtype)
    ta.paged_prefill(strided(q, dtype), strided(k_own, dtype), strided(v_own, dtype), k.to(DEVICE, kv_dtype),
                     v.to(DEVICE, kv_dtype), tables.to(DEVICE), cu.to(DEVICE),
                     torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE), max(q_lens), scale, out=out, **kw)
    out = check_written(buf)
    for b, (n, m) in enumerate(zip(seq_lens, q_lens)):
        if m == 0:
            continue
        rows = slice(cu[b], cu[b + 1])
        ref = reference(q[rows], torch.cat([dense_kv(k, tables[b], n - m), k_own[rows]]),
                        torch.cat([dense_kv(v, tables[b], n - m), v_own[rows]]), torch.arange(n - m, n), scale)
        assert rel_err(out[rows], ref) < TOL[dtype], f"sequence {b} (kv {n}, q {m})"


@pytest.mark.parametrize("q_heads,kv_heads", [(4, 4), (8, 2), (4, 1)])
def test_prefill_full_and_chunked(q_heads, kv_heads):
    # full prefills (q_len == seq_len) and chunks continuing a cached prefix, several tiles long
    run_prefill([1, 15, 16, 70, 90, 57, 40], [1, 15, 16, 70, 33, 1, 17], q_heads, kv_heads, seed=q_heads)


def test_prefill_page_sizes_head_dims_and_empty_chunk():
    run_prefill([9, 64, 31], [9, 0, 31], 2, 1, head_dim=64, page=8, seed=5)
    run_prefill([100, 48], [37, 48], 4, 2, head_dim=16, page=32, seed=6)


def test_prefill_prefix_tile_edges():
    # prefixes of exactly one key tile, one key either side of it, and chunks of several query tiles
    run_prefill([17, 31, 49, 112], [1, 15, 32, 80], 4, 2, head_dim=16, page=8, seed=12)


@pytest.mark.parametrize("dtype", HALF)
def test_prefill_half_precision(dtype):
    run_prefill([50, 20], [30, 20], 4, 2, dtype=dtype, seed=7)


FP8_Q = [torch.float32, torch.float16, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    DEVICE == "cpu", reason="Triton interpreter has no bf16 tl.dot"))]


@pytest.mark.parametrize("dtype", FP8_Q)
def test_fp8_cache_is_read_exactly_as_its_values(dtype):
    """e4m3 K/V widen to q's type without loss, so the kernels match attention over those values."""
    run_decode([1, 17, 130], 8, 2, dtype=dtype, kv_dtype=torch.float8_e4m3fn, num_splits=2, seed=10)
    if dtype == torch.bfloat16:  # the default there runs the dots in fp16; the bf16 dots still work
        run_decode([1, 17, 130], 8, 2, dtype=dtype, kv_dtype=torch.float8_e4m3fn, seed=10, fp16_dot=False)
    run_prefill([50, 20], [30, 20], 4, 2, dtype=dtype, kv_dtype=torch.float8_e4m3fn, seed=11)


def test_bad_inputs_name_the_problem():
    q = torch.zeros(2, 4, 24)
    cache = torch.zeros(3, 16, 2, 24)
    tables = torch.zeros(2, 1, dtype=torch.int32)
    lens = torch.ones(2, dtype=torch.int32)
    with pytest.raises(ValueError, match="power of two"):
        ta.paged_decode(q, cache, cache, tables, lens, 1.0)
    cache = torch.zeros(3, 16, 3, 32)
    with pytest.raises(ValueError, match="kv heads"):
        ta.paged_decode(torch.zeros(2, 4, 32), cache, cache, tables, lens, 1.0)
    with pytest.raises(ValueError, match="int32"):
        ta.paged_decode(torch.zeros(2, 3, 32), cache, cache, tables.long(), lens, 1.0)
    with pytest.raises(ValueError, match="out must be"):
        ta.paged_decode(torch.zeros(2, 3, 32), cache, cache, tables, lens, 1.0, out=torch.zeros(2, 3, 16))
    own = torch.zeros(2, 3, 32)
    with pytest.raises(ValueError, match="dtype"):
        ta.paged_prefill(torch.zeros(2, 3, 32, dtype=torch.float16), own, own, cache, cache, tables,
                         torch.tensor([0, 1, 2], dtype=torch.int32), lens, 1, 1.0)
    with pytest.raises(ValueError, match="own k and v"):
        ta.paged_prefill(torch.zeros(2, 3, 32), own[:1], own, cache, cache, tables,
                         torch.tensor([0, 1, 2], dtype=torch.int32), lens, 1, 1.0)


def test_allocates_out_in_q_dtype_and_accepts_empty_batches():
    gen = torch.Generator().manual_seed(8)
    k, v, tables = make_cache([20, 5], 2, 16, 8, torch.float16, gen)
    k, v, tables = k.to(DEVICE, torch.float16), v.to(DEVICE, torch.float16), tables.to(DEVICE)
    q = torch.randn(2, 4, 16, generator=gen).to(DEVICE, torch.float16)
    lens = torch.tensor([20, 5], dtype=torch.int32, device=DEVICE)
    out = ta.paged_decode(q, k, v, tables, lens, 0.25)
    assert out.shape == q.shape and out.dtype == q.dtype and out.isfinite().all()
    cu = torch.tensor([0, 1, 2], dtype=torch.int32, device=DEVICE)
    last = torch.stack([k[tables[0, 19 // 8], 19 % 8], k[tables[1, 4 // 8], 4 % 8]])  # each one's last key
    last_v = torch.stack([v[tables[0, 19 // 8], 19 % 8], v[tables[1, 4 // 8], 4 % 8]])
    assert torch.allclose(ta.paged_prefill(q, last, last_v, k, v, tables, cu, lens, 1, 0.25), out, atol=1e-3)
    assert ta.paged_decode(q[:0], k, v, tables[:0], lens[:0], 0.25).shape == (0, 4, 16)


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs need a GPU")
def test_decode_replays_from_a_cuda_graph_with_new_lengths():
    gen = torch.Generator().manual_seed(9)
    lens_a, lens_b = [40, 300, 17, 1], [41, 120, 299, 2]
    k, v, tables = make_cache([max(a, b) for a, b in zip(lens_a, lens_b)], 2, 64, 16, torch.float64, gen)
    kd, vd, td = k.to(DEVICE, torch.bfloat16), v.to(DEVICE, torch.bfloat16), tables.to(DEVICE)
    q = torch.zeros(4, 8, 64, dtype=torch.bfloat16, device=DEVICE)
    lens = torch.tensor(lens_a, dtype=torch.int32, device=DEVICE)
    out = torch.empty_like(q)

    def run():
        ta.paged_decode(q, kd, vd, td, lens, 0.125, out=out, num_splits=3)

    run()  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    for new_lens in (lens_a, lens_b):
        q_new = torch.randn(4, 8, 64, generator=gen, dtype=torch.float64)
        q.copy_(q_new)
        lens.copy_(torch.tensor(new_lens, dtype=torch.int32))
        out.fill_(float("nan"))
        graph.replay()
        for b, n in enumerate(new_lens):
            ref = reference(q_new[b:b + 1], dense_kv(k, tables[b], n), dense_kv(v, tables[b], n),
                            torch.tensor([n - 1]), 0.125)
            assert rel_err(out[b:b + 1].cpu(), ref) < TOL[torch.bfloat16]


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="the Triton cache write runs on CUDA only")
@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, torch.float8_e4m3fn])
def test_cache_write_kernel_matches_the_torch_path(cache_dtype):
    from llmbench.agent import attention
    from llmbench.agent.kernels import kv_write
    gen = torch.Generator().manual_seed(13)
    qkv = (torch.randn(40, (8 + 2 * 2) * 64, generator=gen) * 3).to(DEVICE, torch.bfloat16)
    k, v = qkv[:, 8 * 64:10 * 64].view(40, 2, 64), qkv[:, 10 * 64:].view(40, 2, 64)
    slots = torch.randperm(7 * 16, generator=gen)[:40].to(DEVICE)
    ours = [torch.zeros(7, 16, 2, 64, dtype=cache_dtype, device=DEVICE) for _ in range(2)]
    kv_write.write_kv(k, v, *ours, slots)
    ref = [torch.zeros(7, 16, 2, 64, dtype=cache_dtype) for _ in range(2)]
    attention.write_cache(k.cpu(), v.cpu(), *ref, slots.cpu())  # on CPU: the torch path
    for got, want in zip(ours, ref):
        assert torch.equal(got.cpu().view(torch.uint8), want.view(torch.uint8))
