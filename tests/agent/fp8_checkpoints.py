"""Tiny pre-quantized FP8 checkpoints as their producers write them (compressed-tensors, as
llm-compressor exports RedHatAI's Llama FP8 models; ModelOpt, as its HF export does), and a float32
reference forward of exactly the arithmetic they prescribe, written from the formats, not from
llmbench: dequantized weights, activations rounded to e4m3 with their (static or per-token) scales,
keys and values read back from the cache as e4m3(x / scale) * scale."""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from hf_reference import save_hf

FP8 = torch.float8_e4m3fn
E4M3_MAX = 448.0
PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
        "mlp.up_proj", "mlp.down_proj")
GROUPS = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
          ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))


@dataclass(frozen=True)
class Scheme:
    fmt: str  # "compressed-tensors" or "modelopt"
    weights: str  # "tensor" or "channel"
    activations: str  # "static" or "dynamic"
    kv: bool


def e4m3(x: torch.Tensor) -> torch.Tensor:
    """x rounded to e4m3 (saturating at +-448), back in float32."""
    return x.clamp(-E4M3_MAX, E4M3_MAX).to(FP8).float()


def fake_quant(x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """x as an fp8 GEMM sees it: with a static scale, or (None) per row with its amax / 448."""
    if scale is None:
        scale = x.abs().amax(-1, keepdim=True).clamp(min=1e-12) / E4M3_MAX
    return e4m3(x / scale) * scale


def calibrate(folder: Path, prompts: list[list[int]]) -> dict[str, float]:
    """amax of every projection's input and of every layer's k (after RoPE) and v, over the prompts,
    from the float32 forward of the unquantized checkpoint in `folder`."""
    ref = Reference(folder, kv_fp8=False, quantize=False)
    ref.amax = {}
    for p in prompts:
        ref.logits(p, chunk=len(p))
    return ref.amax


def write_checkpoint(path: Path, scheme: Scheme, prompts: list[list[int]], seed: int = 0,
                     static_skew: float = 1.25, pow2_kv: bool = True) -> None:
    """A random tiny Llama saved by transformers, re-saved the way `scheme`'s producer writes it. The
    k_proj input scale is `static_skew` times q/v's (as if calibrated apart), so the test sees which
    one a fused qkv layer takes. pow2_kv: KV scales rounded up to powers of two, which llmbench's fold
    of them into the weight scales multiplies exactly (other scales round, in float32, the odd
    activation to its other e4m3 neighbour)."""
    src = path.parent / f"{path.name}-float"
    hf = save_hf(src, seed=seed)
    amax = calibrate(src, prompts) if scheme.activations == "static" or scheme.kv else {}
    shutil.copytree(src, path)
    (path / "model.safetensors").unlink()
    tensors = {}
    for name, t in hf.state_dict().items():
        module = name.removesuffix(".weight")
        if not any(module.endswith(p) for p in PROJ):
            tensors[name] = t.contiguous()
            continue
        w = t.float()
        if scheme.weights == "tensor":
            scale = w.abs().amax() / E4M3_MAX
            shape = (1,) if scheme.fmt == "compressed-tensors" else ()  # llm-compressor [1], ModelOpt a scalar
        else:
            scale = w.abs().amax(-1) / E4M3_MAX
            shape = (w.shape[0], 1) if scheme.fmt == "compressed-tensors" else (w.shape[0],)
        tensors[name] = (w / scale.reshape(-1, 1) if scale.dim() else w / scale).clamp(-E4M3_MAX, E4M3_MAX).to(FP8)
        tensors[f"{module}.weight_scale"] = scale.reshape(shape).contiguous()
        if scheme.activations == "static":
            layer, proj = module.removeprefix("model.layers.").split(".", 1)
            skew = static_skew if proj == "self_attn.k_proj" else 1.0
            tensors[f"{module}.input_scale"] = torch.tensor([amax[f"{layer}.{proj}"] * skew / E4M3_MAX])
    if scheme.kv:
        for i in range(len(hf.model.layers)):
            k_name, v_name = (("self_attn.k_scale", "self_attn.v_scale") if scheme.fmt == "compressed-tensors"
                              else ("self_attn.k_proj.k_scale", "self_attn.v_proj.v_scale"))
            for name, kind in ((k_name, "k"), (v_name, "v")):
                scale = amax[f"{i}.{kind}"] / E4M3_MAX
                tensors[f"model.layers.{i}.{name}"] = torch.tensor(2.0 ** math.ceil(math.log2(scale)) if pow2_kv
                                                                   else scale)
    save_file(tensors, str(path / "model.safetensors"))
    if scheme.fmt == "compressed-tensors":
        edit_config(path, lambda c: c.update(quantization_config=compressed_tensors_config(scheme)))
    else:
        (path / "hf_quant_config.json").write_text(json.dumps(modelopt_config(scheme), indent=4))


def compressed_tensors_config(scheme: Scheme) -> dict:
    args = {"num_bits": 8, "type": "float", "symmetric": True, "group_size": None, "observer": "minmax"}
    static = scheme.activations == "static"
    return {
        "quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
        "config_groups": {"group_0": {
            "targets": ["Linear"],
            "weights": {**args, "strategy": scheme.weights, "dynamic": False},
            "input_activations": {**args, "strategy": "tensor" if static else "token", "dynamic": not static},
            "output_activations": None}},
        "ignore": ["lm_head"],
        "kv_cache_scheme": {**args, "strategy": "tensor", "dynamic": False} if scheme.kv else None,
    }


def modelopt_config(scheme: Scheme) -> dict:
    algo = "FP8" if scheme.weights == "tensor" else "FP8_PER_CHANNEL_PER_TOKEN"
    return {"producer": {"name": "modelopt", "version": "0.29.0"},
            "quantization": {"quant_algo": algo, "kv_cache_quant_algo": "FP8" if scheme.kv else None,
                             "exclude_modules": ["lm_head"]}}


def edit_config(path: Path, change) -> None:
    config = json.loads((path / "config.json").read_text())
    change(config)
    (path / "config.json").write_text(json.dumps(config, indent=2))


def edit_tensors(path: Path, change) -> None:
    tensors = load_file(str(path / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(path / "model.safetensors"))


class Reference:
    """The checkpoint's forward in float32, as its format defines it. quantize=False: no quantization
    at all (dequantized weights, exact activations), the check of the reference against transformers."""

    def __init__(self, path: Path, kv_fp8: bool, quantize: bool = True):
        self.c = json.loads((path / "config.json").read_text())
        self.t = {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}
        self.quantize, self.kv_fp8 = quantize, kv_fp8
        qc = self.c.get("quantization_config") or {}
        mo = path / "hf_quant_config.json"
        algo = json.loads(mo.read_text())["quantization"]["quant_algo"] if mo.is_file() else None
        acts = (qc.get("config_groups", {}).get("group_0", {}).get("input_activations") or {})
        self.static = algo == "FP8" or acts.get("dynamic") is False
        self.amax: dict[str, float] | None = None  # set to a dict to record what calibrate() needs

    def record(self, name: str, x: torch.Tensor) -> None:
        if self.amax is not None:
            self.amax[name] = max(self.amax.get(name, 0.0), x.abs().max().item())

    def weight(self, module: str) -> torch.Tensor:
        w = self.t[f"{module}.weight"]
        scale = self.t.get(f"{module}.weight_scale")
        return w if scale is None else w * scale.reshape(-1, 1)

    def linear(self, x: torch.Tensor, layer: int, group: tuple[str, ...]) -> list[torch.Tensor]:
        """x through the projections of one group, which read the same input (a fused layer for us)."""
        for p in group:
            self.record(f"{layer}.{p}", x)
        if self.quantize:
            names = [f"model.layers.{layer}.{p}" for p in group]
            scale = torch.stack([self.t[f"{n}.input_scale"].reshape(()) for n in names]).amax() if self.static else None
            x = fake_quant(x, scale)
        return [x @ self.weight(f"model.layers.{layer}.{p}").t() for p in group]

    def kv_scale(self, layer: int, kind: str) -> torch.Tensor | None:
        for name in (f"self_attn.{kind}_scale", f"self_attn.{kind}_proj.{kind}_scale"):
            if f"model.layers.{layer}.{name}" in self.t:
                return self.t[f"model.layers.{layer}.{name}"]
        return None

    def cached(self, x: torch.Tensor, layer: int, kind: str) -> torch.Tensor:
        """x [T, H, D] as read back from the KV cache."""
        self.record(f"{layer}.{kind}", x)
        if not (self.quantize and self.kv_fp8):
            return x
        scale = self.kv_scale(layer, kind)
        return fake_quant(x, torch.tensor(1.0) if scale is None else scale)

    def logits(self, prompt: list[int], chunk: int) -> torch.Tensor:
        """Every position's logits, the prompt going in chunks: a chunk attends to its own keys as
        computed and to the earlier ones as the cache holds them (llmbench's chunked prefill)."""
        c, t = self.c, self.t
        n_heads, n_kv = c["num_attention_heads"], c["num_key_value_heads"]
        d = c["hidden_size"] // n_heads
        eps, theta = c["rms_norm_eps"], c.get("rope_theta") or c["rope_parameters"]["rope_theta"]
        pos = torch.arange(len(prompt), dtype=torch.float32)
        inv = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
        ang = torch.cat([pos[:, None] * inv] * 2, -1)
        cos, sin = ang.cos()[:, None], ang.sin()[:, None]

        def rope(x):
            return x * cos + torch.cat((-x[..., d // 2:], x[..., :d // 2]), -1) * sin

        def norm(x, w):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

        x = t["model.embed_tokens.weight"][torch.tensor(prompt)]
        T = len(prompt)
        for i in range(c["num_hidden_layers"]):
            h = norm(x, t[f"model.layers.{i}.input_layernorm.weight"])
            q, k, v = self.linear(h, i, GROUPS[0])
            q, k, v = rope(q.view(T, n_heads, d)), rope(k.view(T, n_kv, d)), v.view(T, n_kv, d)
            kc, vc = self.cached(k, i, "k"), self.cached(v, i, "v")
            out = torch.empty(T, n_heads, d)
            for s in range(0, T, chunk):
                e = min(s + chunk, T)
                keys = torch.cat([kc[:s], k[s:e]]).repeat_interleave(n_heads // n_kv, 1)
                vals = torch.cat([vc[:s], v[s:e]]).repeat_interleave(n_heads // n_kv, 1)
                scores = torch.einsum("qhd,khd->hqk", q[s:e], keys) / math.sqrt(d)
                causal = torch.arange(e)[None, :] <= torch.arange(s, e)[:, None]
                p = scores.masked_fill(~causal, float("-inf")).softmax(-1)
                out[s:e] = torch.einsum("hqk,khd->qhd", p, vals)
            (o,) = self.linear(out.reshape(T, -1), i, GROUPS[1])
            x = x + o
            h = norm(x, t[f"model.layers.{i}.post_attention_layernorm.weight"])
            g, u = self.linear(h, i, GROUPS[2])
            (down,) = self.linear(F.silu(g) * u, i, GROUPS[3])
            x = x + down
        head = t.get("lm_head.weight", t["model.embed_tokens.weight"])
        return norm(x, t["model.norm.weight"]) @ head.t()
