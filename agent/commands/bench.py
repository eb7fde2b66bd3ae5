"""`llmbench bench`: engine-only offline throughput (no gRPC), optionally beside transformers' generate.

All prompts are submitted at once (MLPerf Offline). The roofline is the FLOPs a sample needs over a
matrix-multiply rate measured here, on this device, in the model's dtype (and, with --quantization
fp8, in fp8 for the layer GEMMs). The step table is the engine's step cost model (agent/engine/step_cost.py):
each step kind and size with its wall, device and host time and its floor at the rates measured here.
"""
from __future__ import annotations

import argparse
import functools
import gc
import time

import numpy as np
import torch

from llmbench.agent.commands.agent import (FRACTION, above, add_headroom_argument, add_overlap_argument,
                                           add_precision_arguments, at_least, check_flags)
from llmbench.agent.model.config import ModelConfig
from llmbench.agent.engine.paged import PagedEngine
from llmbench.agent.model.fp8 import Fp8Linear, quantize_rows
from llmbench.agent.model.loader import resolve_device, resolve_dtype, resolve_source
from llmbench.agent.engine.in_process import generate
from llmbench.agent.engine.step_cost import Rates, floor_seconds
from llmbench.agent.engine.types import EngineConfig, Request
from llmbench.common.cnndm import OUTPUT_LEN, prompt_lengths


# "Auto" defaults are None (not given), so an explicit 0 is refused like any other bad value.
RULES = {"samples": at_least(1), "prompt_len": at_least(1), "output_len": at_least(1), "max_batch": at_least(1),
         "max_step_tokens": at_least(1), "memory_fraction": FRACTION, "hf_batch": at_least(1),
         "hf_samples": at_least(1), "seed": at_least(0), "tpot_limit_ms": above(0),
         "tpot_headroom": FRACTION}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = EngineConfig()
    p.add_argument("--model", default="tiny", help="HF folder or preset (tiny, llama3.1-8b) (default: %(default)s)")
    p.add_argument("--samples", type=int, help="prompts to run (default: 64 on CPU, 2000 on GPU)")
    p.add_argument("--prompt-len", type=int,
                   help="fixed prompt length (default: CNN/DailyMail-shaped lengths, mean ~840)")
    p.add_argument("--output-len", type=int, default=OUTPUT_LEN,
                   help="tokens generated per sample, forced (default: %(default)s)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--max-batch", type=int, help="most queries running at once (default: 512 on GPU, 64 on CPU)")
    p.add_argument("--max-step-tokens", type=int,
                   help="most tokens in one engine step (default: 8192 on GPU, 2048 on CPU)")
    p.add_argument("--memory-fraction", type=float, default=d.memory_fraction,
                   help="share of device memory for weights + KV cache (default: %(default)g)")
    p.add_argument("--attention", default="auto", help="auto, torch, triton or flash (default: %(default)s)")
    add_precision_arguments(p)
    p.add_argument("--tpot-limit-ms", type=float,
                   help="give every query this time-per-output-token limit, as Server (100) and Interactive (30) "
                        "queries carry theirs: steps are sized to it (default: none, Offline)")
    add_headroom_argument(p)
    p.add_argument("--no-cuda-graphs", action="store_true", help="run decode steps eagerly")
    add_overlap_argument(p)
    p.add_argument("--compare", choices=["hf"], help="also run transformers' generate on the same prompts")
    p.add_argument("--hf-batch", type=int,
                   help="static batch for --compare hf (default: what fits 3/4 of the free GPU memory, at most "
                        "128; 8 on CPU)")
    p.add_argument("--hf-samples", type=int, help="prompts for --compare hf (default: 256 on GPU, 16 on CPU)")
    p.add_argument("--profile", nargs="?", const="mixed", choices=["mixed", "decode"],
                   help="print the GPU kernels that took the most time over six steps of this kind mid-run "
                        "(default kind: %(const)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")


def make_prompts(cfg: ModelConfig, n: int, fixed_len: int | None, seed: int) -> list[list[int]]:
    lengths = prompt_lengths(n, seed) if fixed_len is None else np.full(n, fixed_len)
    rng = np.random.default_rng(seed)
    top = min(cfg.vocab_size, 128000)  # stay below Llama-3's special tokens
    prompts = []
    for length in lengths:
        ids = rng.integers(3, top, size=int(length)).tolist()
        ids[0] = cfg.bos_token_id if cfg.bos_token_id is not None else 1
        prompts.append(ids)
    return prompts


def flops_per_sample(cfg: ModelConfig, prompt_len: float, output_len: int) -> tuple[float, float]:
    """Matmul FLOPs of one sample: (the layers' weights for every token fed in, the LM head once per
    generated token plus causal attention)."""
    h, layer = cfg.hidden_size, cfg.layer_matmul_params
    tokens = prompt_len + output_len - 1  # the last generated token is never fed back
    # QK^T and PV: 4 * q_size FLOPs per (query, key) pair, causal pairs ~ L^2/2 in prefill.
    pairs = prompt_len ** 2 / 2 + output_len * (prompt_len + output_len / 2)
    return (2 * cfg.num_layers * layer * tokens,
            2 * h * cfg.vocab_size * output_len + 4 * cfg.q_size * cfg.num_layers * pairs)


def matmul_rate(device: torch.device, dtype: torch.dtype, fp8: bool = False) -> float:
    """Measured FLOP/s of one large matrix product in dtype, or in fp8 as the quantized layers multiply
    (activations quantized beforehand, outside the timing) (median of several)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    if fp8:
        product = functools.partial(Fp8Linear(b).matmul, *quantize_rows(a))
    else:
        def product():
            a @ b
    return 2 * n ** 3 / median_seconds(device, product)


def read_rate(device: torch.device) -> float:
    """Measured bytes/s that device memory is read at: a large copy reads and writes every byte."""
    src = torch.empty(1 << 30 if device.type == "cuda" else 1 << 26, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() / median_seconds(device, lambda: dst.copy_(src))


def median_seconds(device: torch.device, fn) -> float:
    """Median wall time of fn over 10 timed calls after 2 warm-up calls, synchronized on the device."""
    times = []
    for _ in range(12):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times[2:]))


def measure_rates(device: torch.device, dtype: torch.dtype, fp8: bool) -> Rates:
    rate = matmul_rate(device, dtype)
    rates = Rates(matmul=rate, layer_matmul=matmul_rate(device, dtype, fp8=True) if fp8 else rate,
                  read=read_rate(device))
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the engine sizes its KV cache to the memory left
    return rates


def step_floor(mc: ModelConfig, rates: Rates, dtype: torch.dtype, kv_dtype: torch.dtype, fp8: bool):
    """StepShape -> its floor in seconds, for this model in these precisions."""
    layer_bytes = mc.num_layers * mc.layer_matmul_params * (1 if fp8 else dtype.itemsize)
    head_bytes = mc.vocab_size * mc.hidden_size * dtype.itemsize
    kv_bytes = 2 * mc.num_layers * mc.kv_size * kv_dtype.itemsize
    return functools.partial(floor_seconds, mc, rates=rates, layer_bytes=layer_bytes, head_bytes=head_bytes,
                             kv_bytes_per_token=kv_bytes)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_engine(args, cfg: EngineConfig, prompts: list[list[int]], rates: Rates) -> dict:
    t0 = time.perf_counter()
    engine = PagedEngine(cfg)
    engine.start()
    load_s = time.perf_counter() - t0
    device = engine.device
    launch = engine.runner.launch
    profiler = step_profiler() if args.profile else None
    window = {"mixed": 0, "decode": 0}  # kinds launched while the profiler records
    if profiler is not None:
        def profiled(batch):
            launched = launch(batch)
            kind = "mixed" if batch.prefill else "decode"
            if profiler.current_action in (torch.profiler.ProfilerAction.RECORD,
                                           torch.profiler.ProfilerAction.RECORD_AND_SAVE):
                window[kind] += 1
            if kind == args.profile:  # the schedule counts steps of the profiled kind only
                profiler.step()
            return launched
        engine.runner.launch = profiled

    warm = [Request(id=i, prompt=p, max_new_tokens=4, ignore_eos=True) for i, p in enumerate(prompts[:32])]
    generate(engine, warm)  # compiles kernels for prefill and decode shapes outside the timing
    engine.step_costs.clear()
    engine.step_costs.floor = step_floor(engine.source.config, rates, engine.dtype, engine.kv_dtype,
                                         cfg.quantization == "fp8")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    requests = [Request(id=i, prompt=p, max_new_tokens=args.output_len, min_new_tokens=args.output_len,
                        ignore_eos=True, tpot_limit_s=(args.tpot_limit_ms or 0) / 1e3) for i, p in enumerate(prompts)]
    t = time.perf_counter()
    results = generate(engine, requests)
    wall = time.perf_counter() - t
    engine.stop()
    if profiler is not None:
        profiler.stop()
        print(profiler.key_averages().table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=60))
        print(f"profiled window: {window['mixed']} mixed and {window['decode']} decode-only steps launched")
    errors = [g.error for g in results.values() if g.error]
    if errors:
        raise RuntimeError(f"{len(errors)} queries failed, first: {errors[0][1]}")
    out_tokens = sum(len(g.tokens) for g in results.values())
    ttft = [g.first_token_time - t for g in results.values()]
    tpot = [(g.end_time - g.first_token_time) / (len(g.tokens) - 1) for g in results.values() if len(g.tokens) > 1]
    return dict(info=engine.info, source=engine.source, dtype=engine.dtype, device=device,
                attention=engine.runner.model.backend.name, load_s=load_s, wall=wall,
                out_tokens=out_tokens, steps=engine.step_costs, ttft=ttft, tpot=tpot,
                peak=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0)


def step_profiler() -> torch.profiler.profile:
    """Profiles the 41st-46th steps (of the kind stepped on) of the timed run: past the first prefill wave."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    prof = torch.profiler.profile(activities=activities,
                                  schedule=torch.profiler.schedule(wait=38, warmup=2, active=6, repeat=1))
    prof.start()
    return prof


def hf_batch_that_fits(mc: ModelConfig, prompts: list[list[int]], output_len: int, dtype: torch.dtype,
                       free_bytes: int) -> int:
    """The largest static batch (at most 128) whose weights, KV cache and prefill activations fit in 3/4 of
    free_bytes (the rest for fragmentation); every row of a batch is as long as its longest prompt."""
    size = torch.tensor([], dtype=dtype).element_size()
    seq = max(map(len, prompts)) + output_len
    kv = seq * mc.num_layers * 2 * mc.kv_size * size
    activations = 4 * seq * max(mc.intermediate_size, mc.hidden_size) * size  # gate, up, their product, slack
    room = free_bytes * 3 // 4 - mc.num_parameters() * size
    return max(1, min(128, room // (kv + activations)))


def run_hf(source, device: torch.device, dtype: torch.dtype, prompts: list[list[int]], output_len: int,
           batch: int | None) -> tuple[float, int, int]:
    """transformers' generate with static left-padded batches, alone on the device; returns
    (samples/s, the batch used, peak device bytes)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    mc = source.config
    if batch is None:
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
        batch = hf_batch_that_fits(mc, prompts, output_len, dtype, free) if free else 8
    if source.path is not None:
        model = LlamaForCausalLM.from_pretrained(source.path, torch_dtype=dtype)
    else:
        rope = None if mc.rope_scaling is None else {"rope_type": "llama3", **vars(mc.rope_scaling)}
        hf_cfg = LlamaConfig(vocab_size=mc.vocab_size, hidden_size=mc.hidden_size,
                             intermediate_size=mc.intermediate_size, num_hidden_layers=mc.num_layers,
                             num_attention_heads=mc.num_heads, num_key_value_heads=mc.num_kv_heads,
                             head_dim=mc.head_dim, max_position_embeddings=mc.max_position,
                             rope_theta=mc.rope_theta, rope_scaling=rope, rms_norm_eps=mc.rms_norm_eps,
                             tie_word_embeddings=mc.tie_embeddings)
        with torch.device(device):
            model = LlamaForCausalLM(hf_cfg).to(dtype)
    model = model.to(device).eval()
    pad = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t = time.perf_counter()
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        width = max(map(len, chunk))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=output_len,
                           min_new_tokens=output_len, do_sample=False, pad_token_id=pad)
    sync(device)
    rate = len(prompts) / (time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rate, batch, peak


def run(args: argparse.Namespace) -> int:
    check_flags(args, RULES)
    gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    n = args.samples or (2000 if gpu else 64)
    d = EngineConfig()
    cfg = EngineConfig(model=args.model, dtype=args.dtype, device=args.device,
                       memory_fraction=args.memory_fraction, attention=args.attention,
                       max_batch=args.max_batch or (512 if gpu else 64),
                       max_step_tokens=args.max_step_tokens or (8192 if gpu else 2048),
                       tpot_headroom=args.tpot_headroom or d.tpot_headroom,
                       cuda_graphs=not args.no_cuda_graphs, overlap=d.overlap if args.overlap is None else args.overlap,
                       seed=args.seed,
                       quantization=args.quantization or d.quantization,
                       kv_cache_dtype=args.kv_cache_dtype or d.kv_cache_dtype)
    mc = resolve_source(cfg.model).config
    prompts = make_prompts(mc, n, args.prompt_len, args.seed)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    hf = None
    if args.compare == "hf":
        # transformers first and alone: the engine sizes its KV cache to the memory left when it starts.
        hf_prompts = prompts[:args.hf_samples or min(n, 256 if gpu else 16)]
        hf = run_hf(resolve_source(cfg.model), device, dtype, hf_prompts, args.output_len, args.hf_batch)
    rates = measure_rates(device, dtype, cfg.quantization == "fp8")
    r = run_engine(args, cfg, prompts, rates)
    info = r["info"]
    mean_prompt = float(np.mean([len(p) for p in prompts]))
    layer_flops, other_flops = flops_per_sample(mc, mean_prompt, args.output_len)
    ceiling = 1 / (layer_flops / rates.layer_matmul + other_flops / rates.matmul)
    samples_s = n / r["wall"]
    total_tokens = sum(map(len, prompts)) + r["out_tokens"]
    kinds = {}
    for (kind, _), sums in r["steps"].snapshot().items():
        steps, wall = kinds.get(kind, (0, 0.0))
        kinds[kind] = steps + sums.steps, wall + sums.wall
    rows = [
        ("model", f"{info.name} ({info.dtype}, {device}, attention {r['attention']})"),
        ("samples", f"{n} (prompt mean {mean_prompt:.0f} tokens, {args.output_len} output tokens forced)"),
        ("load + warm-up", f"{r['load_s']:.1f} s"),
        ("wall", f"{r['wall']:.2f} s"),
        ("samples/s", f"{samples_s:.2f}"),
        ("output tokens/s", f"{r['out_tokens'] / r['wall']:.0f}"),
        ("total tokens/s", f"{total_tokens / r['wall']:.0f}"),
        *((label, f"{steps}, mean {1e3 * wall / steps:.1f} ms") for label, (steps, wall) in
          (("steps with prefill", kinds.get("mixed", (0, 0.0))), ("decode-only steps", kinds.get("decode", (0, 0.0))))
          if steps),
        ("TTFT p50/p99", f"{percentile(r['ttft'], 50):.2f} / {percentile(r['ttft'], 99):.2f} s (all submitted at t=0)"),
        ("TPOT p50/p99", f"{1e3 * percentile(r['tpot'], 50):.1f} / {1e3 * percentile(r['tpot'], 99):.1f} ms"
                         + (f" (limit {args.tpot_limit_ms:g} ms: steps sized to it)" if args.tpot_limit_ms else "")),
        ("peak GPU memory", f"{r['peak'] / 2**30:.1f} GiB" if r["peak"] else "n/a (CPU)"),
        ("precision", f"{info.dtype}; layer GEMMs {'fp8' if cfg.quantization == 'fp8' else info.dtype}; "
                      f"KV cache {info.kv_cache_dtype}"),
        ("matmul rate measured", f"{rates.matmul / 1e12:.1f} TFLOP/s ({info.dtype})"
                                 + (f", {rates.layer_matmul / 1e12:.1f} TFLOP/s (fp8)" if cfg.quantization == "fp8" else "")),
        ("read rate measured", f"{rates.read / 1e9:.0f} GB/s"),
        ("compute roofline", f"{ceiling:.2f} samples/s -> {100 * samples_s / ceiling:.1f} % of roofline"),
    ]
    if hf is not None:
        hf_rate, hf_batch, hf_peak = hf
        peak = f", peak {hf_peak / 2**30:.1f} GiB" if hf_peak else ""
        rows.append(("transformers generate", f"{hf_rate:.2f} samples/s ({len(hf_prompts)} prompts, "
                                              f"static batch {hf_batch}{peak})"))
        rows.append(("llmbench / transformers", f"{samples_s / hf_rate:.2f}x"))
    width = max(len(k) for k, _ in rows)
    print("\nllmbench bench (engine only, Offline)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print("\nstep cost model (mean per step; host = wall - device: the device waits for Python)")
    print("\n".join(r["steps"].table()))
    return 0
