"""`llmbench calibrate`: a calibrated FP8 checkpoint from a float one, without another tool. The
model runs every calibration prompt (CNN/DailyMail articles, as MLPerf calibrates on its published
list of train-split articles) in its own dtype; the largest magnitude of each projection's input and
of each layer's keys (after RoPE) and values becomes that static scale (amax / 448, the "minmax"
observer of llm-compressor and ModelOpt's "max"), and the weights are quantized per output channel.
The result is a compressed-tensors checkpoint (agent/model/fp8_export.py) that `--quantization fp8`
loads, with `--kv-cache-dtype fp8` for its KV scales.

Records with `article` are tokenized as the article alone (BOS first where the tokenizer adds one):
MLPerf's instruction template is the coordinator's and adds the same ~30 tokens to every prompt;
the ranges come from the articles.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from llmbench.agent.attention import select_backend
from llmbench.agent.commands.agent import at_least, check_flags
from llmbench.agent.engine.runner import ModelRunner
from llmbench.agent.engine.scheduler import Batch, Sequence
from llmbench.agent.engine.types import Request
from llmbench.agent.model.fp8 import QUANTIZED
from llmbench.agent.model.fp8_export import Calibration, check_output, write_fp8_checkpoint
from llmbench.agent.model.fp8_scheme import read_scheme
from llmbench.agent.model.loader import (ModelSource, build_model, read_tensors, resolve_device, resolve_dtype,
                                         resolve_source)
from llmbench.agent.model.tokenizer import encode, load_tokenizer

BLOCK_SIZE = 16
RULES = {"samples": at_least(1), "max_tokens": at_least(2)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="an HF Llama folder with float weights (bf16, fp16 or fp32)")
    p.add_argument("--dataset", required=True, metavar="FILE",
                   help="JSONL (or a JSON list) of records with 'article' (CNN/DailyMail) or 'tok_input' (token ids)")
    p.add_argument("--output", required=True, metavar="DIR", help="the new checkpoint's folder")
    p.add_argument("--tokenizer", metavar="DIR", help="for 'article' records (default: the --model folder)")
    p.add_argument("--samples", type=int, help="calibrate on the first N records (default: all)")
    p.add_argument("--max-tokens", type=int, default=2540,
                   help="cut longer prompts to this many tokens (default: %(default)s, MLPerf's longest prompt)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument("--dtype", default="auto", help="the model's dtype while calibrating (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    check_flags(args, RULES)
    source = resolve_source(args.model)
    if source.path is None:
        raise ValueError(f"--model {args.model}: calibrate needs a model folder, not a preset")
    if read_scheme(source.path) is not None:
        raise ValueError(f"--model {source.path} is quantized already: calibrate a float checkpoint")
    out = Path(args.output)
    check_output(out)  # before the calibration's work, not after it
    limit = min(args.max_tokens, source.config.max_position)
    prompts = read_prompts(Path(args.dataset), args.samples, limit, args.tokenizer or str(source.path),
                           source.config.vocab_size)
    device = resolve_device(args.device)
    calibration = observe(source, prompts, device, resolve_dtype(args.dtype, device))
    write_fp8_checkpoint(source.path, read_tensors(source.path), calibration, out)
    print(f"llmbench calibrate: {out}: fp8 weights per channel, static activation and KV scales from "
          f"{len(prompts)} prompts ({sum(map(len, prompts))} tokens)")
    return 0


def read_prompts(path: Path, samples: int | None, limit: int, tokenizer_path: str, vocab: int) -> list[list[int]]:
    records = _records(path)[:samples]
    if not records:
        raise ValueError(f"--dataset {path} holds no records")
    tokenizer = None
    prompts = []
    for i, rec in enumerate(records):
        if isinstance(rec, dict) and isinstance(rec.get("tok_input"), list):
            ids = rec["tok_input"]
        elif isinstance(rec, dict) and isinstance(rec.get("article"), str):
            tokenizer = tokenizer or load_tokenizer(tokenizer_path)
            if tokenizer is None:
                raise ValueError(f"--dataset {path} has articles but {tokenizer_path} has no tokenizer: give --tokenizer")
            ids = encode(tokenizer, rec["article"])
        else:
            raise ValueError(f"--dataset {path} record {i} has neither 'article' (a string) nor 'tok_input' (token ids)")
        if not ids or not all(type(t) is int and 0 <= t < vocab for t in ids):
            raise ValueError(f"--dataset {path} record {i}: its token ids are empty or not all in 0..{vocab - 1}")
        prompts.append(ids[:limit])
    return prompts


def _records(path: Path) -> list[Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"--dataset {path}: {e.strerror}") from None
    try:
        if text.lstrip().startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ValueError(f"--dataset {path}: not JSON or JSONL ({e})") from None


@torch.inference_mode()
def observe(source: ModelSource, prompts: list[list[int]], device: torch.device, dtype: torch.dtype) -> Calibration:
    """Each prompt prefilled whole; the projections' inputs seen by hooks, the keys and values read
    from the KV cache after each prompt (its slots hold them all, earlier prompts' beside them)."""
    mc = source.config
    model = build_model(source, select_backend("auto", device, BLOCK_SIZE, mc.head_dim), device, dtype)
    longest = max(map(len, prompts))
    runner = ModelRunner(model, -(-longest // BLOCK_SIZE), BLOCK_SIZE, max_context=longest)
    inputs: dict[tuple[int, str], float] = {}

    def record(key: tuple[int, str], x: torch.Tensor) -> None:
        inputs[key] = max(inputs.get(key, 0.0), x.abs().max().item())

    hooks = [layer.get_submodule(path).register_forward_pre_hook(lambda m, a, key=(i, path): record(key, a[0]))
             for i, layer in enumerate(model.layers) for path in QUANTIZED]
    keys, values = [0.0] * mc.num_layers, [0.0] * mc.num_layers
    for prompt in prompts:
        seq = Sequence(Request(id=0, prompt=prompt, max_new_tokens=1), None, (), runner.num_blocks)
        seq.block_table = list(range(runner.num_blocks))
        input_ids, positions, meta, rows = runner.prepare(Batch(prefill=[(seq, len(prompt))]))
        model(input_ids, positions, meta, rows)
        for i, layer in enumerate(model.layers):
            keys[i] = max(keys[i], layer.self_attn.k_cache.abs().max().item())
            values[i] = max(values[i], layer.self_attn.v_cache.abs().max().item())
    for h in hooks:
        h.remove()
    return Calibration(inputs, keys, values)
