"""Writing a calibrated FP8 checkpoint in the compressed-tensors format (as llm-compressor writes
RedHatAI's Llama FP8 models): every decoder projection's weight in e4m3 with a per-channel
`weight_scale`, a static per-tensor `input_scale`, a `k_scale` and a `v_scale` per layer, the rest of
the source folder's tensors as they were, and `quantization_config` in config.json. What
agent/model/fp8_checkpoint.py loads back."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from llmbench.agent.kernels.fp8_format import FP8, FP8_MAX, MIN_AMAX
from llmbench.agent.model.fp8_scheme import COMPRESSED_TENSORS
from llmbench.agent.model.hf_names import FUSED

_PROJECTION = re.compile(r"model\.layers\.(\d+)\.(\w+\.\w+_proj)\.weight")
_ARGS = {"num_bits": 8, "type": "float", "symmetric": True, "group_size": None, "dynamic": False}
QUANTIZATION_CONFIG = {
    "quant_method": COMPRESSED_TENSORS, "format": "float-quantized", "quantization_status": "compressed",
    "config_groups": {"group_0": {"targets": ["Linear"], "weights": {**_ARGS, "strategy": "channel"},
                                  "input_activations": {**_ARGS, "strategy": "tensor"}}},
    "ignore": ["lm_head"],
    "kv_cache_scheme": {**_ARGS, "strategy": "tensor"},
}


@dataclass
class Calibration:
    """The largest magnitudes seen over the calibration prompts."""
    inputs: dict[tuple[int, str], float]  # (layer, our fused projection) -> its input's amax
    keys: list[float]  # per layer: k after RoPE, as the cache holds it
    values: list[float]

    def input_scale(self, layer: int, hf_module: str) -> float:
        ours = next(path for path, modules in FUSED.items() if hf_module in modules)
        return _scale(self.inputs[(layer, ours)])


def _scale(amax: float) -> float:
    return max(amax, MIN_AMAX) / FP8_MAX


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] -> e4m3 [N, K] and float32 scales [N, 1], per output channel."""
    scale = w.float().abs().amax(-1, keepdim=True).clamp(min=MIN_AMAX) / FP8_MAX
    return (w.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def check_output(out: Path) -> None:
    if (out / "config.json").exists():
        raise ValueError(f"--output {out} already holds a checkpoint (config.json): choose a new folder")


def write_fp8_checkpoint(source: Path, tensors: dict[str, torch.Tensor], calibration: Calibration,
                         out: Path) -> None:
    """`tensors`: the source checkpoint's, by HF name. Writes out/ (created; it must not hold a
    checkpoint already) with the source folder's other files (tokenizer, generation config)."""
    check_output(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        m = _PROJECTION.fullmatch(name)
        if m is None:
            written[name] = t.contiguous()
            continue
        layer, module = int(m.group(1)), m.group(2)
        written[name], written[f"model.layers.{layer}.{module}.weight_scale"] = quantize_weight(t)
        written[f"model.layers.{layer}.{module}.input_scale"] = torch.tensor([calibration.input_scale(layer, module)])
    for layer, (k, v) in enumerate(zip(calibration.keys, calibration.values)):
        written[f"model.layers.{layer}.self_attn.k_scale"] = torch.tensor(_scale(k))
        written[f"model.layers.{layer}.self_attn.v_scale"] = torch.tensor(_scale(v))
    save_file(written, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = QUANTIZATION_CONFIG
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for f in source.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name not in ("config.json", "model.safetensors.index.json"):
            shutil.copy2(f, out / f.name)
