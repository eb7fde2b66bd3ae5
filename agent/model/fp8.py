"""FP8 (e4m3) layer GEMMs: per-output-channel weight scales, per-token activation scales taken on the
fly, one row-wise-scaled `torch._scaled_mm` per projection (the "fp8 dynamic" scheme of vLLM and of
MLPerf submissions). The embeddings, norms and LM head stay in the model dtype. A layer loaded from a
calibrated checkpoint (agent/model/fp8_checkpoint.py) may instead hold a static `input_scale`: one
per-tensor activation scale, applied in torch on every device (there is no fused kernel for it).

On CUDA the activations are quantized by a Triton kernel (one read, one write per row) and multiplied
by cuBLAS in fp8; elsewhere the torch code below quantizes and multiplies the dequantized operands in
float32, the same products (CPU builds of torch differ in which fp8 scalings they support). Triton's
interpreter rounds to fp8 wrongly near powers of two, so the kernel is only run and tested on a GPU.
"""
from __future__ import annotations

import torch
from torch import nn

from llmbench.agent.kernels.fp8_format import FP8, FP8_MAX, MIN_AMAX, Fp8Rows

QUANTIZED = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")


def quantize_rows_torch(x: torch.Tensor) -> Fp8Rows:
    """x [M, K] -> fp8 [M, K] and float32 scales [M, 1] with x ~= fp8 * scale row by row."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=MIN_AMAX) / FP8_MAX
    return Fp8Rows((x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale)


def quantize_rows(x: torch.Tensor) -> Fp8Rows:
    if x.is_cuda:
        from llmbench.agent.kernels import fp8_quant
        return fp8_quant.quantize_rows(x)
    return quantize_rows_torch(x)


def quantize_static(x: torch.Tensor, scale: torch.Tensor) -> Fp8Rows:
    """x [M, K] -> fp8 [M, K] with one calibrated scale [1] for every row (saturating, as the checkpoint's
    producers quantize); the scale comes back per row, the layout the row-wise GEMM takes."""
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return Fp8Rows(q, scale.expand(x.shape[0], 1).contiguous())


def check_shape(name: str, out_features: int, in_features: int) -> None:
    if out_features % 16 or in_features % 16:
        raise ValueError(f"fp8 needs {name} dimensions that are multiples of 16, got "
                         f"{out_features} x {in_features}")


class Fp8Linear(nn.Module):
    """y = x W^T with W stored as fp8 [N, K] and a float32 scale per output channel."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        q, scale = quantize_rows_torch(weight.detach())
        self.register_buffer("weight", q)  # [N, K] row-major = the column-major [K, N] _scaled_mm wants
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, N]
        self.register_buffer("input_scale", None)  # [1] float32 for static activations, else per token
        self.out_dtype = weight.dtype

    @classmethod
    def empty(cls, out_features: int, in_features: int, dtype: torch.dtype, static: bool) -> Fp8Linear:
        """A layer on the meta device, for a checkpoint's fp8 weight and scales to be loaded into once
        the model is moved to its device (static: it takes an input_scale)."""
        layer = cls(torch.empty(out_features, in_features, dtype=dtype, device="meta"))
        if static:
            layer.input_scale = torch.empty(1, dtype=torch.float32, device="meta")
        return layer

    def forward(self, x: torch.Tensor | Fp8Rows) -> torch.Tensor:
        """x: activations [..., K], or rows already quantized by a fused producer."""
        if isinstance(x, Fp8Rows):
            return self.matmul(*x)
        rows = x.reshape(-1, x.shape[-1])
        y = self.matmul(*(quantize_rows(rows) if self.input_scale is None else
                          quantize_static(rows, self.input_scale)))
        return y.view(*x.shape[:-1], y.shape[-1])

    def matmul(self, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """(fp8 [M, K], scales [M, 1]) -> [M, N] in the layer's dtype."""
        if q.is_cuda:
            return torch._scaled_mm(q, self.weight.t(), scale_a=scale, scale_b=self.weight_scale,
                                    out_dtype=self.out_dtype)
        return ((q.float() * scale) @ self.dequantized().t()).to(self.out_dtype)

    def dequantized(self) -> torch.Tensor:
        """The weight this layer multiplies by, in float32 [N, K] (for tests and error reports)."""
        return self.weight.float() * self.weight_scale.t()


def hand_over_fp8_rows(layer: nn.Module) -> None:
    """Have the norms and SiLU·up in front of a layer's Fp8Linears quantize their outputs per token (the
    fused kernels on CUDA), for projections that take dynamic scales."""
    layer.input_layernorm.fp8_out = layer.post_attention_layernorm.fp8_out = layer.mlp.fp8_act = True


def quantize_model(model: nn.Module) -> None:
    """Swap every layer's four projections for Fp8Linear, one at a time, freeing each original, and
    have the norms and SiLU·up in front of them hand over fp8 rows."""
    for layer in model.layers:
        hand_over_fp8_rows(layer)
        for path in QUANTIZED:
            parent_name, child = path.split(".")
            parent = getattr(layer, parent_name)
            linear = getattr(parent, child)
            check_shape(path, *linear.weight.shape)
            setattr(parent, child, Fp8Linear(linear.weight))
            del linear
