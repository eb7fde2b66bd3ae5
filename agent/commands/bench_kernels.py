"""Time the fp8 and fused elementwise Triton kernels at Llama-3.1-8B shapes (CUDA only).

    python -m llmbench.agent.commands.bench_kernels [fp8|fused ...]   (default: both)

fp8: the per-token quantizer and the fp8 GEMM against bf16, per projection. fp8-rows: the fp8 GEMMs by
row count (decode steps have few rows), row-wise scaled against one scale for the whole tensor (cuBLAS's
own scaling) with the row and channel scales applied after, and bf16; the weights' read rate. fused: residual add +
RMSNorm, RoPE and SiLU-and-mul against the torch reference path of agent/model/llama.py.
"""
from __future__ import annotations

import sys

import torch
import triton
import triton.testing

from llmbench.agent.kernels import fp8_quant, fused
from llmbench.agent.model import llama as m
from llmbench.agent.model.config import PRESETS
from llmbench.agent.model.fp8 import Fp8Linear


def fp8_gemms() -> None:
    """Quantization and fp8 vs bf16 GEMMs at T=8192 rows of Llama-3.1-8B's projections."""
    t, dev, dt = 8192, torch.device("cuda"), torch.bfloat16
    shapes = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
    print(f"T={t} on {torch.cuda.get_device_name()}")
    print(f"{'proj':<8} {'quant ms':>9} {'quant GB/s':>11} {'bf16 TFLOP/s':>13} {'fp8+quant TFLOP/s':>18} {'speedup':>8}")
    for name, (n, k) in shapes.items():
        x = torch.randn(t, k, device=dev, dtype=dt)
        w = torch.randn(n, k, device=dev, dtype=dt) * 0.02
        fp8 = Fp8Linear(w)
        flop = 2 * t * n * k
        ms_q = triton.testing.do_bench(lambda: fp8_quant.quantize_rows(x), return_mode="median")
        ms_bf16 = triton.testing.do_bench(lambda: x @ w.t(), return_mode="median")
        ms_fp8 = triton.testing.do_bench(lambda: fp8(x), return_mode="median")
        print(f"{name:<8} {ms_q:9.3f} {3 * t * k / ms_q / 1e6:11.0f} {flop / ms_bf16 / 1e9:13.0f} "
              f"{flop / ms_fp8 / 1e9:18.0f} {ms_bf16 / ms_fp8:7.2f}x")


def fp8_gemms_by_rows() -> None:
    """Row-wise vs tensor-wise scaled fp8 GEMMs and bf16 at the row counts of decode and small mixed steps."""
    dev, dt = torch.device("cuda"), torch.bfloat16
    shapes = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
    one = torch.ones((), device=dev)
    print(f"{'rows':>5} {'bf16 ms':>8} {'fp8 row ms':>11} {'fp8 tensor+scale ms':>20} {'row GB/s':>9} {'tensor GB/s':>12}")
    layers = {name: Fp8Linear(torch.randn(n, k, device=dev, dtype=dt) * 0.02) for name, (n, k) in shapes.items()}
    bf16 = {name: torch.randn(n, k, device=dev, dtype=dt) * 0.02 for name, (n, k) in shapes.items()}
    weight_bytes = sum(n * k for n, k in shapes.values())  # fp8: one byte a weight, read once per GEMM
    for n_rows in (8, 32, 64, 128, 256, 512, 1024, 2048):
        xs = {name: torch.randn(n_rows, k, device=dev, dtype=dt) for name, (_, k) in shapes.items()}
        rows = {name: fp8_quant.quantize_rows(x) for name, x in xs.items()}

        def row_wise() -> None:
            for name, layer in layers.items():
                layer.matmul(*rows[name])

        def tensor_wise() -> None:
            for name, layer in layers.items():
                q, scale = rows[name]
                y = torch._scaled_mm(q, layer.weight.t(), scale_a=one, scale_b=one, out_dtype=dt)
                y.mul_(scale).mul_(layer.weight_scale)

        def half() -> None:
            for name, w in bf16.items():
                xs[name] @ w.t()
        ms = [triton.testing.do_bench(f, return_mode="median") for f in (half, row_wise, tensor_wise)]
        print(f"{n_rows:5d} {ms[0]:8.3f} {ms[1]:11.3f} {ms[2]:20.3f} {weight_bytes / ms[1] / 1e6:9.0f} "
              f"{weight_bytes / ms[2] / 1e6:12.0f}")


def fused_elementwise() -> None:
    """Fused vs torch path at Llama-3.1-8B shapes, T=8192 bf16 rows (median of do_bench)."""
    t, hidden, hq, hkv, d, inter = 8192, 4096, 32, 8, 128, 14336
    dev, dt = torch.device("cuda"), torch.bfloat16
    x, res = torch.randn(t, hidden, device=dev, dtype=dt), torch.randn(t, hidden, device=dev, dtype=dt)
    w = torch.rand(hidden, device=dev, dtype=dt) + 0.5
    qkv = torch.randn(t, (hq + 2 * hkv) * d, device=dev, dtype=dt)
    q, k = qkv[:, :hq * d].view(t, hq, d), qkv[:, hq * d:(hq + hkv) * d].view(t, hkv, d)
    pos = torch.randint(0, 2048, (t,), device=dev)
    tables = m.RotaryEmbedding(PRESETS["llama3.1-8b"], dev, dt)
    gate_up = torch.randn(t, 2 * inter, device=dev, dtype=dt)
    two = 2  # bytes per bf16 element
    cases = [  # name, fused, torch, bytes the fused kernel moves
        ("add+rmsnorm", lambda: fused.add_rmsnorm(x, res, w, 1e-5), lambda: m.add_rmsnorm_torch(x, res, w, 1e-5),
         4 * t * hidden * two),
        ("rmsnorm", lambda: fused.add_rmsnorm(x, None, w, 1e-5), lambda: m.add_rmsnorm_torch(x, None, w, 1e-5),
         2 * t * hidden * two),
        ("rope q+k", lambda: fused.rope_(q, k, pos, tables.cos, tables.sin),
         lambda: m.rope_torch(q, k, pos, tables.cos, tables.sin), 2 * t * (hq + hkv) * d * two + t * d * two),
        ("silu*up", lambda: fused.silu_and_mul(gate_up), lambda: m.silu_and_mul_torch(gate_up), 3 * t * inter * two),
    ]
    print(f"T={t} bf16 on {torch.cuda.get_device_name()}")
    print(f"{'kernel':<12} {'fused ms':>9} {'torch ms':>9} {'speedup':>8} {'fused GB/s':>11}")
    for name, kernel, ref, nbytes in cases:
        ms_fused = triton.testing.do_bench(kernel, return_mode="median")
        ms_torch = triton.testing.do_bench(ref, return_mode="median")
        print(f"{name:<12} {ms_fused:9.3f} {ms_torch:9.3f} {ms_torch / ms_fused:7.2f}x "
              f"{nbytes / ms_fused / 1e6:11.0f}")


BENCHES = {"fp8": fp8_gemms, "fp8-rows": fp8_gemms_by_rows, "fused": fused_elementwise}


def main(argv: list[str] | None = None) -> int:
    names = (sys.argv[1:] if argv is None else argv) or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"bench_kernels: unknown {', '.join(unknown)}; choose from {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("bench_kernels times the kernels on CUDA; no GPU here", file=sys.stderr)
        return 2
    for name in names:
        BENCHES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
