"""Time the Triton paged attention kernels on one Llama-3.1-8B layer shape (CUDA only).

    python -m llmbench.agent.commands.bench_attention [--sweep]

Decode: B sequences x context tokens, reported as GB/s of K/V read next to the measured copy rate.
Prefill: sequences x tokens causal (full, and a chunk continuing a cached prefix), as TFLOP/s, next
to torch's flash SDPA on the same shape. Every kernel output is checked against float32 torch.
"""
from __future__ import annotations

import argparse
import itertools
import math

import torch
import triton
from triton.testing import do_bench

from llmbench.agent.kernels.paged_attention import KernelConfig, decode_splits, paged_decode, paged_prefill

Q_HEADS, KV_HEADS, HEAD_DIM, PAGE = 32, 8, 128, 16
DTYPE = torch.bfloat16
DEVICE = "cuda"


def make_cache(seq_lens: list[int], kv_dtype: torch.dtype = DTYPE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paged K/V holding seq_lens tokens in shuffled blocks; the block table is as wide as the longest."""
    width = triton.cdiv(max(seq_lens), PAGE)
    num_blocks = len(seq_lens) * width
    k = torch.randn(num_blocks, PAGE, KV_HEADS, HEAD_DIM, device=DEVICE, dtype=DTYPE).to(kv_dtype)
    v = torch.randn_like(k, dtype=DTYPE).to(kv_dtype)
    tables = torch.randperm(num_blocks, device=DEVICE, dtype=torch.int32).view(len(seq_lens), width)
    return k, v, tables


def dense(cache: torch.Tensor, tables: torch.Tensor, length: int) -> torch.Tensor:
    """[B, length, Hkv, D] float32 of the first length tokens of every sequence."""
    index = tables[:, :triton.cdiv(length, PAGE)].long()
    blocks = cache.view(torch.uint8)[index].view(cache.dtype).float()  # (fp8 has no index kernels)
    return blocks.flatten(1, 2)[:, :length]


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
              scale: float) -> torch.Tensor:
    """q [B, n, Hq, D] at absolute positions [n]; k, v [B, L, Hkv, D]; float32 causal attention."""
    b, n = q.shape[:2]
    qg = q.float().view(b, n, KV_HEADS, Q_HEADS // KV_HEADS, HEAD_DIM)
    scores = torch.einsum("bnhgd,blhd->bhgnl", qg, k) * scale
    visible = torch.arange(k.shape[1], device=q.device)[None, :] <= positions[:, None]
    probs = scores.masked_fill(~visible, float("-inf")).softmax(-1)
    return torch.einsum("bhgnl,blhd->bnhgd", probs, v).reshape(b, n, Q_HEADS, HEAD_DIM)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref).norm() / ref.norm()).item()


def graph_ms(fn) -> float:
    """Time fn replayed from a CUDA graph (also proves it captures: no syncs, no data-sized allocs)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return do_bench(graph.replay)


def copy_gbps() -> float:
    src = torch.empty(1 << 29, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)
    return 2 * src.numel() / do_bench(lambda: dst.copy_(src)) / 1e6


def decode_case(batch: int, context: int, copy_rate: float, config: KernelConfig | None = None,
                num_splits: int | None = None, check: bool = True, kv_dtype: torch.dtype = DTYPE,
                fp16_dot: bool | None = None) -> dict:
    k, v, tables = make_cache([context] * batch, kv_dtype)
    q = torch.randn(batch, Q_HEADS, HEAD_DIM, device=DEVICE, dtype=DTYPE)
    lens = torch.full((batch,), context, dtype=torch.int32, device=DEVICE)
    out = torch.empty_like(q)
    scale = HEAD_DIM ** -0.5

    def run() -> torch.Tensor:
        return paged_decode(q, k, v, tables, lens, scale, out=out, config=config, num_splits=num_splits,
                            fp16_dot=fp16_dot)

    ms = do_bench(run)
    gbps = batch * context * KV_HEADS * HEAD_DIM * 2 * kv_dtype.itemsize / ms / 1e6
    cache = " fp8" if kv_dtype == torch.float8_e4m3fn else ""
    row = {"case": f"decode B={batch} ctx={context}{cache}", "ms": ms, "rate": f"{gbps:7.0f} GB/s",
           "roof": f"{100 * gbps / copy_rate:5.1f}% of copy",
           "splits": num_splits or decode_splits(batch, KV_HEADS, tables.shape[1] * PAGE, q.device)}
    if check:
        row["graph_ms"] = graph_ms(run)
        ref = reference(q[:, None], dense(k, tables, context), dense(v, tables, context),
                        torch.tensor([context - 1], device=DEVICE), scale)[:, 0]
        row["err"] = rel_err(out, ref)
    return row


def prefill_case(seqs: int, seq_len: int, q_len: int, config: KernelConfig | None = None,
                 check: bool = True, kv_dtype: torch.dtype = DTYPE) -> dict:
    """The chunks' own K/V are the cache's last q_len positions in the model's type, as the engine
    hands them over; the prefix is read from the cache."""
    k, v, tables = make_cache([seq_len] * seqs, kv_dtype)
    kd, vd = dense(k, tables, seq_len), dense(v, tables, seq_len)
    k_own, v_own = (x[:, seq_len - q_len:].to(DTYPE).flatten(0, 1) for x in (kd, vd))
    q = torch.randn(seqs * q_len, Q_HEADS, HEAD_DIM, device=DEVICE, dtype=DTYPE)
    cu = torch.arange(0, seqs + 1, device=DEVICE, dtype=torch.int32) * q_len
    lens = torch.full((seqs,), seq_len, dtype=torch.int32, device=DEVICE)
    out = torch.empty_like(q)
    scale = HEAD_DIM ** -0.5
    ms = do_bench(lambda: paged_prefill(q, k_own, v_own, k, v, tables, cu, lens, q_len, scale, out=out,
                                        config=config))
    pairs = q_len * (seq_len - q_len) + q_len * (q_len + 1) // 2  # visible (query, key) pairs
    flops = 4 * HEAD_DIM * Q_HEADS * seqs * pairs
    cache = " fp8" if kv_dtype == torch.float8_e4m3fn else ""
    row = {"case": f"prefill {seqs}x{q_len} of {seq_len}{cache}", "ms": ms,
           "rate": f"{flops / ms / 1e9:7.1f} TFLOP/s", "roof": "", "splits": ""}
    if check:
        ref = reference(q.view(seqs, q_len, Q_HEADS, HEAD_DIM), kd, vd,
                        torch.arange(seq_len - q_len, seq_len, device=DEVICE), scale)
        row["err"] = rel_err(out.view_as(ref), ref)
        if q_len == seq_len:
            row["roof"] = sdpa_rate(q.view(seqs, q_len, Q_HEADS, HEAD_DIM), kd.to(DTYPE), vd.to(DTYPE), flops)
    return row


def sdpa_rate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, flops: int) -> str:
    """torch's flash SDPA on the same (dense, contiguous) causal problem, for comparison."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            ms = do_bench(lambda: torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True, enable_gqa=True))
    except RuntimeError as exc:
        return f"sdpa: {str(exc).splitlines()[0][:40]}"
    return f"sdpa flash {flops / ms / 1e9:.1f} TFLOP/s"


def print_table(rows: list[dict]) -> None:
    print(f"{'case':28} {'splits':>6} {'ms':>8} {'graph ms':>8} {'rate':>16}  {'rel err':>8}  reference")
    for r in rows:
        graph = f"{r['graph_ms']:8.3f}" if "graph_ms" in r else f"{'':8}"
        err = f"{r['err']:8.1e}" if "err" in r else f"{'':8}"
        print(f"{r['case']:28} {r['splits']!s:>6} {r['ms']:8.3f} {graph} {r['rate']:>16}  {err}  {r['roof']}")


def fastest(ms_of, configs: list[KernelConfig]) -> list[tuple[float, KernelConfig]]:
    """(ms, config) for every config that compiles, fastest first."""
    timed = []
    for cfg in configs:
        try:
            timed.append((ms_of(cfg), cfg))
        except triton.runtime.errors.OutOfResources:
            continue
    return sorted(timed, key=lambda t: t[0])


def sweep(copy_rate: float) -> None:
    """Time plausible tile configs (then split counts) against the defaults; prints the fastest."""
    def shown(timed: list[tuple[float, KernelConfig]]) -> str:
        return ", ".join(f"{ms:.3f} ms {cfg}" for ms, cfg in timed[:3])

    decode_configs = [KernelConfig(16, n, w, s)
                      for n, w, s in itertools.product((32, 64, 128, 256), (2, 4, 8), (2, 3, 4))]
    fp8 = torch.float8_e4m3fn
    for kv_dtype, fp16_dot in ((DTYPE, False), (fp8, False), (fp8, True)):
        for batch in (64, 512):
            def case(cfg=None, splits=None):
                return decode_case(batch, 1024, copy_rate, cfg, splits, check=False, kv_dtype=kv_dtype,
                                   fp16_dot=fp16_dot)["ms"]
            default = case()
            timed = fastest(case, decode_configs)
            print(f"decode B={batch} {str(kv_dtype)[6:]} cache, fp16 dots {fp16_dot}: default {default:.3f} ms; "
                  f"fastest {shown(timed)}")
            splits = {s: case(timed[0][1], s) for s in (1, 2, 3, 4, 8)}
            print("  splits with the fastest: " + ", ".join(f"{s}: {ms:.3f} ms" for s, ms in splits.items()))
    prefill_configs = [KernelConfig(m, n, w, s)
                       for m, n, w, s in itertools.product((64, 128), (32, 64, 128), (4, 8), (2, 3, 4)) if m % n == 0]
    default = prefill_case(8, 1024, 1024, check=False)["ms"]
    timed = fastest(lambda cfg: prefill_case(8, 1024, 1024, cfg, check=False)["ms"], prefill_configs)
    print(f"prefill 8x1024: default {default:.3f} ms; fastest {shown(timed)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmbench.agent.commands.bench_attention", description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=1024, help="decode context length (tokens)")
    parser.add_argument("--sweep", action="store_true", help="also time all tile configs and split counts")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_attention needs a CUDA GPU")
    torch.manual_seed(0)
    copy_rate = copy_gbps()
    print(f"{torch.cuda.get_device_name()}: copy {copy_rate:.0f} GB/s (read + write), triton {triton.__version__}, "
          f"torch {torch.__version__}; Hq={Q_HEADS} Hkv={KV_HEADS} D={HEAD_DIM} page={PAGE} {DTYPE}")
    rows = [decode_case(b, args.context, copy_rate) for b in (64, 256, 512)]
    rows += [decode_case(b, args.context, copy_rate, kv_dtype=torch.float8_e4m3fn) for b in (64, 512)]
    rows += [prefill_case(8, 1024, 1024), prefill_case(8, 1024, 256)]
    rows += [prefill_case(8, 1024, 1024, kv_dtype=torch.float8_e4m3fn),
             prefill_case(8, 1024, 256, kv_dtype=torch.float8_e4m3fn)]
    print_table(rows)
    bad = [r["case"] for r in rows if not math.isfinite(r["err"]) or r["err"] > 2e-2]
    if args.sweep:
        sweep(copy_rate)
    if bad:
        print("MISMATCH vs float32 reference: " + ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
