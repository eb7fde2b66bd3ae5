"""Build the model on its device: weights from an HF safetensors folder, or random for a preset."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from llmbench.agent.attention import AttentionBackend
from llmbench.agent.model.config import PRESETS, ModelConfig, load_model_config
from llmbench.agent.model.fp8 import FP8, quantize_model
from llmbench.agent.model.fp8_checkpoint import Fp8Checkpoint
from llmbench.agent.model.fp8_scheme import read_scheme
from llmbench.agent.model.hf_names import fused_into
from llmbench.agent.model.llama import LlamaForCausalLM

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INIT_STD = 0.02
# HF checkpoint names that carry no weights of ours.
IGNORED = re.compile(r".*rotary_emb\.inv_freq$")


@dataclass
class ModelSource:
    name: str
    config: ModelConfig
    path: Path | None  # None for a preset


def resolve_source(model: str) -> ModelSource:
    if model in PRESETS:
        return ModelSource(model, PRESETS[model], None)
    path = Path(model)
    if not path.is_dir():
        raise ValueError(f"model {model!r} is neither a preset ({', '.join(PRESETS)}) nor a folder")
    return ModelSource(path.name, load_model_config(path), path)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device: use cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported: use cpu, cuda, cuda:N or auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA devices")
        device = torch.device("cuda", index)
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not supported: use {', '.join(DTYPES)} or auto")
    return DTYPES[name]


def resolve_kv_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    if name not in ("auto", "fp8"):
        raise ValueError(f"kv_cache_dtype {name!r} is not supported: use auto (the model dtype) or fp8")
    return FP8 if name == "fp8" else dtype


def check_quantization(name: str, device: torch.device, dtype: torch.dtype) -> None:
    if name not in ("none", "fp8"):
        raise ValueError(f"quantization {name!r} is not supported: use none or fp8")
    if name != "fp8" or device.type != "cuda":
        return
    if dtype != torch.bfloat16:  # cuBLAS's row-wise scaled fp8 GEMM only writes bfloat16
        raise ValueError(f"quantization fp8 on a GPU needs dtype bfloat16, got {str(dtype).removeprefix('torch.')}")
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise ValueError(f"quantization fp8 needs an Ada or Hopper GPU (compute capability >= 8.9); "
                         f"{torch.cuda.get_device_name(device)} is {major}.{minor}")


def build_model(source: ModelSource, backend: AttentionBackend, device: torch.device,
                dtype: torch.dtype, seed: int = 0, quantization: str = "none") -> LlamaForCausalLM:
    cfg = source.config
    checkpoint = open_fp8_checkpoint(source, quantization)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg, backend, device, dtype).to(dtype)
        if checkpoint is not None:
            checkpoint.prepare(model)
    model.to_empty(device=device)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    if source.path is None:
        _init_random(model, seed)
    else:
        _load_safetensors(model, source.path, checkpoint)
    if quantization == "fp8" and not (checkpoint and checkpoint.scheme.weights):
        quantize_model(model)
    return model.eval()


def open_fp8_checkpoint(source: ModelSource, quantization: str) -> Fp8Checkpoint | None:
    """The folder's FP8 scheme, ready to load; None for a preset or an unquantized checkpoint."""
    scheme = read_scheme(source.path) if source.path is not None else None
    if scheme is None:
        return None
    if scheme.weights and quantization != "fp8":
        raise ValueError(f"{source.path} is an fp8 checkpoint ({scheme.describe()}): run it with --quantization fp8")
    log.info("%s: pre-quantized checkpoint, %s", source.path, scheme.describe())
    return Fp8Checkpoint(scheme, source.config)


def _init_random(model: LlamaForCausalLM, seed: int) -> None:
    gen = torch.Generator(device=model.embed_tokens.weight.device).manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.data.fill_(1.0)
        else:
            param.data.normal_(0.0, INIT_STD, generator=gen)


def _checkpoint_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{index}: malformed index ({e})") from None
        files = [folder / f for f in sorted(set(weight_map.values()))]
    else:
        files = sorted(folder.glob("*.safetensors"))
    missing = [str(f) for f in files if not f.is_file()]
    if missing or not files:
        raise ValueError(f"{folder}: safetensors weights missing ({', '.join(missing) or 'no *.safetensors'})")
    return files


def _target(cfg: ModelConfig, name: str) -> tuple[str, int] | None:
    """HF tensor name -> (our parameter name, row offset inside it)."""
    if name == "model.embed_tokens.weight":
        return "embed_tokens.weight", 0
    if name == "model.norm.weight":
        return "norm.weight", 0
    if name == "lm_head.weight":
        return ("lm_head.weight", 0) if not cfg.tie_embeddings else None
    m = re.fullmatch(r"model\.layers\.(\d+)\.(\w+\.\w+|\w+)\.weight", name)
    if m is None:
        raise ValueError(f"unexpected tensor {name!r} in checkpoint")
    layer, module = m.groups()
    ours, offset = fused_into(cfg, module) or (module, 0)
    return f"layers.{layer}.{ours}.weight", offset


def _open_safetensors(file: Path, device: str) -> safe_open:
    """safe_open, with errors that name the file: safetensors' own (e.g. "incomplete metadata, file not
    fully covered" for a truncated shard) say neither which file nor that it is the file that is bad."""
    try:
        return safe_open(str(file), framework="pt", device=device)
    except SafetensorError as e:
        raise ValueError(f"{file} is truncated or not a safetensors file: {e}") from None


def _load_safetensors(model: LlamaForCausalLM, folder: Path, checkpoint: Fp8Checkpoint | None = None) -> None:
    params = dict(model.named_parameters())
    params.update((name, b) for name, b in model.named_buffers() if name.endswith(".weight"))  # Fp8Linear's
    expected = {name: p.shape[0] for name, p in params.items()}
    filled: dict[str, int] = {}
    device = str(model.embed_tokens.weight.device)
    for file in _checkpoint_files(folder):
        with _open_safetensors(file, device) as f:
            for name in f.keys():
                if IGNORED.match(name) or (checkpoint and checkpoint.take(name, lambda: f.get_tensor(name))):
                    continue
                target = _target(model.cfg, name)
                if target is None:
                    continue
                ours, offset = target
                if ours not in params:
                    raise ValueError(f"{file.name}: tensor {name!r} does not fit the config (no {ours})")
                tensor = f.get_tensor(name)
                dest = params[ours].data[offset:offset + tensor.shape[0]]
                if dest.shape != tensor.shape:
                    raise ValueError(f"{file.name}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                                     f"config.json implies {tuple(dest.shape)}")
                _check_fp8(file, name, tensor.dtype, dest.dtype, checkpoint)
                dest.copy_(tensor)
                filled[ours] = filled.get(ours, 0) + tensor.shape[0]
    missing = [n for n, rows in expected.items() if filled.get(n, 0) != rows]
    if model.cfg.tie_embeddings:
        missing = [n for n in missing if n != "lm_head.weight"]
    if missing:
        raise ValueError(f"{folder}: checkpoint lacks weights for {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}")
    if checkpoint is not None:
        checkpoint.apply(model)
    log.info("loaded %d tensors from %s", len(filled), folder)


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's safetensors checkpoint, by name, on the CPU (as stored)."""
    tensors = {}
    for file in _checkpoint_files(folder):
        with _open_safetensors(file, "cpu") as f:
            tensors.update((name, f.get_tensor(name)) for name in f.keys() if not IGNORED.match(name))
    return tensors


def _check_fp8(file: Path, name: str, got: torch.dtype, want: torch.dtype, checkpoint: Fp8Checkpoint | None) -> None:
    """An e4m3 tensor goes only where the scheme keeps e4m3 (a copy would convert it silently, its
    scale lost), and only e4m3 goes there."""
    if (got == FP8) == (want == FP8):
        return
    if want == FP8:
        assert checkpoint is not None  # only its scheme makes fp8 layers
        raise ValueError(f"{file.name}: tensor {name!r} is {str(got).removeprefix('torch.')}, but the "
                         f"{checkpoint.scheme.format} config says the decoder projections are float8_e4m3fn")
    why = ("config.json has no FP8 quantization config" if checkpoint is None or not checkpoint.scheme.weights
           else f"llmbench keeps {name} in {str(want).removeprefix('torch.')}: only the decoder projections run in fp8")
    raise ValueError(f"{file.name}: tensor {name!r} is float8_e4m3fn, but {why}")
