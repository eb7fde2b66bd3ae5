"""The Triton paged kernels (agent/kernels/paged_attention.py) for both parts; CUDA, any KV dtype."""
from __future__ import annotations

from llmbench.agent.attention.base import register
from llmbench.agent.kernels import limits


@register
class TritonAttention:
    name = "triton"
    auto_preference = 2

    def __init__(self, scale: float):
        from llmbench.agent.kernels import paged_attention
        self.kernels = paged_attention
        self.scale = scale

    @staticmethod
    def refuses(device, block_size, head_dim, fp8_kv) -> str | None:
        if device.type != "cuda":
            return f"needs a CUDA device (device is {device})"
        if not limits.takes_head_dim(head_dim):
            return f"needs head_dim a power of two >= 16, the model has {head_dim}"
        return None

    def prefill(self, q, k, v, k_cache, v_cache, meta, out) -> None:
        self.kernels.paged_prefill(q, k, v, k_cache, v_cache, meta.prefill_block_tables, meta.cu_seqlens_q,
                                   meta.seq_lens, meta.max_seqlen_q, self.scale, out=out)

    def decode(self, q, k_cache, v_cache, meta, out) -> None:
        self.kernels.paged_decode(q, k_cache, v_cache, meta.decode_block_tables, meta.context_lens,
                                  self.scale, out=out)
