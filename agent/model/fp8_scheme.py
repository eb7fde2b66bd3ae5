"""What a pre-quantized FP8 checkpoint holds, read from its quantization config: compressed-tensors
(llm-compressor's `quantization_config` in config.json, e.g. RedHatAI's Llama-3.1-8B-Instruct-FP8 and
-FP8-dynamic) or NVIDIA ModelOpt (`hf_quant_config.json`). Both store the weights in e4m3 with a
`weight_scale` (x ~= q * scale), static activations with an `input_scale`, and per-layer KV scales.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbench.agent.model.config import read_json_object

COMPRESSED_TENSORS = "compressed-tensors"
MODELOPT = "modelopt"
MODELOPT_FILE = "hf_quant_config.json"
# ModelOpt's quant_algo -> (weight scales, activation scales)
MODELOPT_ALGOS = {"FP8": ("tensor", "static"), "FP8_PER_CHANNEL_PER_TOKEN": ("channel", "dynamic")}


@dataclass(frozen=True)
class Fp8Scheme:
    format: str  # COMPRESSED_TENSORS or MODELOPT
    weights: str | None  # "tensor" or "channel" (a weight_scale each); None: weights not quantized
    activations: str | None  # "static" (an input_scale each) or "dynamic" (per token); None with weights
    kv_scales: bool  # a k_scale and a v_scale per layer

    @property
    def kv_names(self) -> tuple[str, str]:
        """The format's names of a layer's KV scales, under model.layers.N."""
        if self.format == MODELOPT:
            return "self_attn.k_proj.k_scale", "self_attn.v_proj.v_scale"
        return "self_attn.k_scale", "self_attn.v_scale"

    def describe(self) -> str:
        parts = [self.format]
        if self.weights:
            parts.append(f"fp8 weights per-{self.weights}, "
                         + ("static per-tensor activations" if self.activations == "static" else
                            "dynamic per-token activations"))
        if self.kv_scales:
            parts.append("KV scales")
        return ", ".join(parts)


def read_scheme(folder: Path) -> Fp8Scheme | None:
    """The folder's FP8 scheme; None for a checkpoint without a quantization config."""
    modelopt = folder / MODELOPT_FILE
    if modelopt.is_file():
        return _modelopt(read_json_object(modelopt).get("quantization"), modelopt.name)
    config = read_json_object(folder / "config.json")
    qc = config.get("quantization_config")
    if qc is None:
        return None
    where = "config.json quantization_config"
    if not isinstance(qc, dict):
        raise ValueError(f"{where} must be an object, got {qc!r}")
    method = qc.get("quant_method")
    if method == COMPRESSED_TENSORS:
        return _compressed_tensors(qc, where)
    if method == MODELOPT:
        raise ValueError(f"{where} says modelopt but {folder} has no {MODELOPT_FILE}")
    raise ValueError(f"{where}: quant_method {method!r} is not supported "
                     f"(llmbench loads {COMPRESSED_TENSORS} and {MODELOPT} FP8 checkpoints)")


def _modelopt(q: Any, where: str) -> Fp8Scheme:
    if not isinstance(q, dict):
        raise ValueError(f"{where}: 'quantization' must be an object, got {q!r}")
    algo, kv = q.get("quant_algo"), q.get("kv_cache_quant_algo")
    if algo is not None and algo not in MODELOPT_ALGOS:
        raise ValueError(f"{where}: quant_algo {algo!r} is not supported (llmbench loads "
                         f"{', '.join(MODELOPT_ALGOS)} or null)")
    if kv not in (None, "FP8"):
        raise ValueError(f"{where}: kv_cache_quant_algo {kv!r} is not supported (FP8 or null)")
    _names_list(q.get("exclude_modules"), f"{where}: exclude_modules")
    if algo is None and kv is None:
        raise ValueError(f"{where}: neither quant_algo nor kv_cache_quant_algo is set: nothing is quantized")
    weights, activations = MODELOPT_ALGOS[algo] if algo else (None, None)
    return Fp8Scheme(MODELOPT, weights, activations, kv_scales=kv == "FP8")


def _compressed_tensors(qc: dict, where: str) -> Fp8Scheme:
    groups = qc.get("config_groups") or {}
    if not isinstance(groups, dict) or len(groups) > 1:
        raise ValueError(f"{where}: config_groups must be an object of at most one group (llmbench runs every "
                         f"decoder projection in one scheme), got {json.dumps(groups)[:200]}")
    _names_list(qc.get("ignore"), f"{where}: ignore")
    weights = activations = None
    for name, group in groups.items():
        at = f"{where}: config_groups.{name}"
        if not isinstance(group, dict):
            raise ValueError(f"{at} must be an object")
        fmt = group.get("format") or qc.get("format")
        if fmt != "float-quantized":
            raise ValueError(f"{at}: format {fmt!r} is not supported (llmbench loads float-quantized)")
        w = _fp8_args(group.get("weights"), f"{at}.weights")
        if w.get("dynamic"):
            raise ValueError(f"{at}.weights: dynamic weights are not supported")
        weights = _strategy(w, f"{at}.weights", ("tensor", "channel"))
        a = group.get("input_activations")
        if a is None:
            raise ValueError(f"{at}: input_activations null (weight-only fp8) is not supported: llmbench "
                             f"multiplies in fp8, so activations need a scheme (static tensor or dynamic token)")
        a = _fp8_args(a, f"{at}.input_activations")
        activations = "dynamic" if a.get("dynamic") is True else "static"
        _strategy(a, f"{at}.input_activations", ("token",) if activations == "dynamic" else ("tensor",))
    kv = qc.get("kv_cache_scheme")
    if kv is not None:
        kv = _fp8_args(kv, f"{where}: kv_cache_scheme")
        if kv.get("dynamic"):
            raise ValueError(f"{where}: kv_cache_scheme dynamic is not supported (static per-tensor scales)")
        _strategy(kv, f"{where}: kv_cache_scheme", ("tensor",))
    if weights is None and kv is None:
        raise ValueError(f"{where}: neither config_groups nor kv_cache_scheme is set: nothing is quantized")
    return Fp8Scheme(COMPRESSED_TENSORS, weights, activations, kv_scales=kv is not None)


def _fp8_args(args: Any, where: str) -> dict:
    """Quantization args that describe e4m3: 8 bits, float, symmetric."""
    if not isinstance(args, dict):
        raise ValueError(f"{where} must be an object, got {args!r}")
    kind = (args.get("num_bits"), args.get("type"))
    if kind != (8, "float"):
        raise ValueError(f"{where}: {kind[0]}-bit {kind[1]} is not supported (llmbench loads 8-bit float, e4m3)")
    if args.get("symmetric") is False:
        raise ValueError(f"{where}: asymmetric quantization is not supported")
    return args


def _strategy(args: dict, where: str, allowed: tuple[str, ...]) -> str:
    strategy = args.get("strategy", "tensor")
    if strategy not in allowed:
        raise ValueError(f"{where}: strategy {strategy!r} is not supported here (use {' or '.join(allowed)})")
    return strategy


def _names_list(value: Any, where: str) -> None:
    if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ValueError(f"{where} must be a list of module names, got {value!r}")
