"""How an HF Llama checkpoint's projections map onto our fused layers: q/k/v stack into one qkv_proj,
gate/up into one gate_up_proj, each HF module a block of rows."""
from __future__ import annotations

from llmbench.agent.model.config import ModelConfig

# our layer (under layers.N) -> the HF modules (under model.layers.N) whose rows it stacks, in order
FUSED = {
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "self_attn.o_proj": ("self_attn.o_proj",),
    "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.down_proj": ("mlp.down_proj",),
}


def shards(cfg: ModelConfig, ours: str) -> list[tuple[str, int, int]]:
    """(HF module, first row, rows) of each block of our layer `ours`."""
    rows = {"self_attn.q_proj": cfg.q_size, "self_attn.k_proj": cfg.kv_size, "self_attn.v_proj": cfg.kv_size,
            "self_attn.o_proj": cfg.hidden_size, "mlp.gate_proj": cfg.intermediate_size,
            "mlp.up_proj": cfg.intermediate_size, "mlp.down_proj": cfg.hidden_size}
    out, offset = [], 0
    for hf in FUSED[ours]:
        out.append((hf, offset, rows[hf]))
        offset += rows[hf]
    return out


def fused_into(cfg: ModelConfig, hf: str) -> tuple[str, int] | None:
    """(our layer, first row) of the HF module `hf` (e.g. "self_attn.k_proj"); None for a module
    that is not a projection (the norms)."""
    for ours in FUSED:
        for name, offset, _ in shards(cfg, ours):
            if name == hf:
                return ours, offset
    return None
