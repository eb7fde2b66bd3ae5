"""A pre-quantized FP8 checkpoint (agent/model/fp8_scheme.py) into the model: its decoder projections
become empty Fp8Linears before the weights load (the e4m3 weights go straight in, never widened), the
scale tensors are gathered as they stream past, then set into the layers: q/k/v and gate/up shards'
weight scales stacked per output row (a per-tensor scale repeated over its shard's rows), a fused
layer's static input scale the largest of its shards' (as vLLM takes; calibrators give the shards of one
input the same), the norms in front of dynamic layers handing over per-token fp8 rows.

KV scales are folded into the weights, so the attention kernels and the cache write stay as they are:
attention reads q.k and p.v, and with q' = q * k_scale, k' = k / k_scale, v' = v / v_scale and the
attention output times v_scale (o_proj's weight scale times v_scale, its static input scale divided by
it) every product is unchanged, while the cache holds k' and v' — in e4m3 with --kv-cache-dtype fp8,
exactly the checkpoint's k / k_scale. RoPE is linear, so scaling q and k before it is the same as after.
"""
from __future__ import annotations

import re
from typing import Callable

import torch
from torch import nn

from llmbench.agent.model.config import ModelConfig
from llmbench.agent.model.fp8 import QUANTIZED, Fp8Linear, check_shape, hand_over_fp8_rows
from llmbench.agent.model.fp8_scheme import Fp8Scheme
from llmbench.agent.model.hf_names import shards

# Other spellings of a layer's KV scales (under model.layers.N.self_attn) that exporters write:
# compressed-tensors' attention-module names, ModelOpt's, and the older projection-output names.
KV_ALIASES = {"k": ("k_scale", "k_proj.k_scale", "k_proj.output_scale"),
              "v": ("v_scale", "v_proj.v_scale", "v_proj.output_scale")}


class Fp8Checkpoint:
    """One checkpoint's scheme and, while its tensors load, its scale tensors."""

    def __init__(self, scheme: Fp8Scheme, cfg: ModelConfig):
        self.scheme, self.cfg = scheme, cfg
        self.scales: dict[str, torch.Tensor] = {}
        suffixes = [s for s, wanted in (("weight_scale", scheme.weights), ("input_scale", scheme.activations == "static"))
                    if wanted]
        patterns = [rf"(self_attn|mlp)\.\w+_proj\.({'|'.join(suffixes)})"] if suffixes else []
        if scheme.kv_scales:
            patterns.append(rf"self_attn\.({'|'.join(re.escape(a) for a in (*KV_ALIASES['k'], *KV_ALIASES['v']))})")
        self._scale_name = re.compile(rf"model\.layers\.\d+\.({'|'.join(patterns)})")

    def prepare(self, model: nn.Module) -> None:
        """On the meta model: each decoder projection an empty Fp8Linear of the scheme."""
        if not self.scheme.weights:
            return
        for layer in model.layers:
            for path in QUANTIZED:
                parent_name, child = path.split(".")
                parent = getattr(layer, parent_name)
                linear = getattr(parent, child)
                check_shape(path, *linear.weight.shape)
                setattr(parent, child, Fp8Linear.empty(*linear.weight.shape, linear.weight.dtype,
                                                       static=self.scheme.activations == "static"))

    def take(self, name: str, read: Callable[[], torch.Tensor]) -> bool:
        """Keeps the tensor `name` if it is one of the scheme's scales (read() gives it)."""
        if not self._scale_name.fullmatch(name):
            return False
        self.scales[name] = read().detach().float().cpu()
        return True

    def apply(self, model: nn.Module) -> None:
        """Sets the gathered scales into the loaded model; a scale the scheme needs and the checkpoint
        lacks, or one it has that fits no layer, is an error that names the tensor."""
        used: set[str] = set()
        for i, layer in enumerate(model.layers):
            if self.scheme.weights:
                for path in QUANTIZED:
                    self._set_layer_scales(i, path, _child(layer, path), used)
                if self.scheme.activations == "dynamic":
                    hand_over_fp8_rows(layer)
            if self.scheme.kv_scales:
                fold_kv_scales(layer.self_attn, self.cfg, self._kv_scale(i, "k", used), self._kv_scale(i, "v", used))
        unused = sorted(set(self.scales) - used)
        if unused:
            raise ValueError(f"checkpoint tensor {unused[0]!r} fits no layer of config.json "
                             f"({self.cfg.num_layers} layers)")

    def _set_layer_scales(self, i: int, path: str, linear: Fp8Linear, used: set[str]) -> None:
        rows, inputs = [], []
        for hf, _, n in shards(self.cfg, path):
            name = f"model.layers.{i}.{hf}.weight_scale"
            scale = self._scale(name, used).reshape(-1)
            want = 1 if self.scheme.weights == "tensor" else n
            if scale.numel() != want:
                raise ValueError(f"checkpoint tensor {name!r} has {scale.numel()} values; a per-"
                                 f"{self.scheme.weights} weight scale of {n} rows has {want}")
            rows.append(scale.expand(n))
            if linear.input_scale is not None:
                inputs.append(self._scalar(f"model.layers.{i}.{hf}.input_scale", used))
        linear.weight_scale.copy_(torch.cat(rows).view(1, -1))
        if inputs:
            linear.input_scale.copy_(torch.stack(inputs).amax().view(1))

    def _kv_scale(self, i: int, kind: str, used: set[str]) -> torch.Tensor:
        names = [f"model.layers.{i}.self_attn.{alias}" for alias in KV_ALIASES[kind]]
        found = next((n for n in names if n in self.scales), None)
        own = f"model.layers.{i}.{self.scheme.kv_names[kind == 'v']}"
        return self._scalar(found or own, used)

    def _scalar(self, name: str, used: set[str]) -> torch.Tensor:
        scale = self._scale(name, used)
        if scale.numel() != 1:
            raise ValueError(f"checkpoint tensor {name!r} has {scale.numel()} values; a per-tensor scale has 1")
        return scale.reshape(())

    def _scale(self, name: str, used: set[str]) -> torch.Tensor:
        if name not in self.scales:
            raise ValueError(f"checkpoint lacks the scale tensor {name!r} that its {self.scheme.format} "
                             f"config ({self.scheme.describe()}) needs")
        scale = self.scales[name]
        if not (scale.isfinite().all() and (scale > 0).all()):
            raise ValueError(f"checkpoint tensor {name!r} holds a scale that is not positive and finite")
        used.add(name)
        return scale


def _child(layer: nn.Module, path: str) -> Fp8Linear:
    parent, child = path.split(".")
    return getattr(getattr(layer, parent), child)


@torch.no_grad()
def fold_kv_scales(attn: nn.Module, cfg: ModelConfig, k_scale: torch.Tensor, v_scale: torch.Tensor) -> None:
    """q rows times k_scale, k rows over it, v rows over v_scale, o_proj's output times v_scale (see the
    module docstring); in the weight scales of Fp8Linears, in the weights themselves otherwise."""
    q, kv = cfg.q_size, cfg.kv_size
    rows = torch.cat([k_scale.expand(q), 1 / k_scale.expand(kv), 1 / v_scale.expand(kv)])
    _scale_output(attn.qkv_proj, rows)
    _scale_output(attn.o_proj, v_scale.expand(cfg.hidden_size))
    if isinstance(attn.o_proj, Fp8Linear) and attn.o_proj.input_scale is not None:
        attn.o_proj.input_scale.div_(v_scale.to(attn.o_proj.input_scale.device))


def _scale_output(linear: nn.Module, rows: torch.Tensor) -> None:
    """Multiply output row n of a layer by rows[n]."""
    if isinstance(linear, Fp8Linear):
        linear.weight_scale.mul_(rows.to(linear.weight_scale.device).view(1, -1))
    else:
        weight = linear.weight
        weight.copy_((weight.float() * rows.to(weight.device)[:, None]).to(weight.dtype))
