"""Llama-3 forward over a flat varlen batch, numerically the same as transformers' LlamaForCausalLM."""
from __future__ import annotations

import math
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from llmbench.agent.attention import AttentionBackend, AttentionMetadata, paged_attention
from llmbench.agent.model.config import ModelConfig
from llmbench.agent.model.fp8 import Fp8Rows, quantize_rows_torch


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    dim = cfg.head_dim
    steps = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float()
    inv_freq = 1.0 / (cfg.rope_theta ** (steps / dim))
    s = cfg.rope_scaling
    if s is None:
        return inv_freq
    low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding:
    """cos/sin tables for every position, computed in float32 on the CPU, kept in the model dtype."""

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype):
        positions = torch.arange(cfg.max_position, dtype=torch.float32, device="cpu")
        freqs = positions[:, None] * rope_inv_freq(cfg)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = emb.cos().to(device=device, dtype=dtype)
        self.sin = emb.sin().to(device=device, dtype=dtype)

    def __call__(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        return rope(q, k, positions, self.cos, self.sin)


# Elementwise ops: fused Triton kernels (agent/kernels/fused.py) on CUDA tensors, the plain torch
# code below (the reference, same rounding as transformers) elsewhere. Tests override the choice
# with FUSED = True (on CPU the kernels run in Triton's interpreter) or False.
FUSED: bool | None = None


def _fused(x: torch.Tensor) -> ModuleType | None:
    """The kernels.fused module when x takes the fused path, else None (triton imports lazily)."""
    if not (x.is_cuda if FUSED is None else FUSED):
        return None
    from llmbench.agent.kernels import fused
    return fused


def add_rmsnorm_torch(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    if residual is not None:
        x = x + residual
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype), x


def add_rmsnorm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rmsnorm(x + residual) * weight, x + residual); residual None: (rmsnorm(x) * weight, x)."""
    fused = _fused(x)
    return (fused.add_rmsnorm if fused else add_rmsnorm_torch)(x, residual, weight, eps)


def add_rmsnorm_fp8(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                    eps: float) -> tuple[Fp8Rows, torch.Tensor]:
    """add_rmsnorm with its output quantized per row for an Fp8Linear."""
    fused = _fused(x)
    if fused:
        return fused.add_rmsnorm_fp8(x, residual, weight, eps)
    out, residual = add_rmsnorm_torch(x, residual, weight, eps)
    return quantize_rows_torch(out), residual


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_torch(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cos = cos[positions].unsqueeze(1)
    sin = sin[positions].unsqueeze(1)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def rope(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor,
         sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotated (q, k); the fused path rotates q and k in place and returns them."""
    fused = _fused(q)
    return (fused.rope_ if fused else rope_torch)(q, k, positions, cos, sin)


def silu_and_mul_torch(x: torch.Tensor) -> torch.Tensor:
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """[T, 2I] = [gate | up] -> silu(gate) * up [T, I]."""
    fused = _fused(x)
    return (fused.silu_and_mul if fused else silu_and_mul_torch)(x)


def silu_and_mul_fp8(x: torch.Tensor) -> Fp8Rows:
    fused = _fused(x)
    return fused.silu_and_mul_fp8(x) if fused else quantize_rows_torch(silu_and_mul_torch(x))


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
        self.fp8_out = False  # set by fp8.quantize_model when an Fp8Linear reads the output

    def forward(self, x: torch.Tensor,
                residual: torch.Tensor | None = None) -> tuple[torch.Tensor | Fp8Rows, torch.Tensor]:
        """(normalized x + residual, the new residual stream x + residual)."""
        return (add_rmsnorm_fp8 if self.fp8_out else add_rmsnorm)(x, residual, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv_proj = nn.Linear(cfg.hidden_size, cfg.q_size + 2 * cfg.kv_size, bias=False)
        self.o_proj = nn.Linear(cfg.q_size, cfg.hidden_size, bias=False)
        self.k_cache = self.v_cache = torch.empty(0)  # set by the runner once the cache exists

    def forward(self, x: torch.Tensor | Fp8Rows, positions: torch.Tensor, rope: RotaryEmbedding,
                backend: AttentionBackend, meta: AttentionMetadata) -> torch.Tensor:
        c = self.cfg
        q, k, v = self.qkv_proj(x).split([c.q_size, c.kv_size, c.kv_size], dim=-1)
        q = q.view(-1, c.num_heads, c.head_dim)
        k = k.view(-1, c.num_kv_heads, c.head_dim)
        v = v.view(-1, c.num_kv_heads, c.head_dim)
        q, k = rope(positions, q, k)
        o = paged_attention(backend, q, k, v, self.k_cache, self.v_cache, meta)
        return self.o_proj(o.flatten(1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.fp8_act = False  # set by fp8.quantize_model: SiLU·up hands fp8 rows to down_proj

    def forward(self, x: torch.Tensor | Fp8Rows) -> torch.Tensor:
        return self.down_proj((silu_and_mul_fp8 if self.fp8_act else silu_and_mul)(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None, positions: torch.Tensor,
                rope: RotaryEmbedding, backend: AttentionBackend,
                meta: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual stream is carried beside the layer's output, so each norm adds it in
        (residual None on the first layer); returns (mlp output, residual stream)."""
        x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(x, positions, rope, backend, meta)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig, backend: AttentionBackend, device: torch.device,
                 dtype: torch.dtype):
        super().__init__()
        self.cfg = cfg
        self.backend = backend
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rope = RotaryEmbedding(cfg, device, dtype)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                logits_indices: torch.Tensor) -> torch.Tensor:
        """input_ids/positions [T]; returns float32 logits [len(logits_indices), vocab] only for the
        rows that sample a next token."""
        x, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            x, residual = layer(x, residual, positions, self.rope, self.backend, meta)
        x, _ = self.norm(x[logits_indices], residual[logits_indices])
        return self.lm_head(x).float()
