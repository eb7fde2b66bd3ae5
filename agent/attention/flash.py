"""flash-attn 2 with a block table: CUDA, block_size a multiple of 256, no fp8 KV cache."""
from __future__ import annotations

from llmbench.agent.attention.base import register


def _importable() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


@register
class FlashAttention:
    name = "flash"
    auto_preference = 3

    def __init__(self, scale: float):
        from flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache
        self.varlen, self.with_kvcache = flash_attn_varlen_func, flash_attn_with_kvcache
        self.scale = scale

    @staticmethod
    def refuses(device, block_size, head_dim, fp8_kv) -> str | None:
        if device.type != "cuda":
            return f"needs a CUDA device (device is {device})"
        if fp8_kv:
            return "cannot read an fp8 KV cache: use triton"
        if block_size % 256:
            return f"needs block_size a multiple of 256, got {block_size}"
        if not _importable():
            return "needs flash-attn (pip install 'llmbench[flash]')"
        return None

    def prefill(self, q, k, v, k_cache, v_cache, meta, out) -> None:
        # the cache holds k/v in q's type (no fp8 here), so reading the chunk back from it is exact
        out.copy_(self.varlen(q, k_cache, v_cache, meta.cu_seqlens_q, meta.cu_seqlens_k,
                              meta.max_seqlen_q, meta.max_seqlen_k, softmax_scale=self.scale,
                              causal=True, block_table=meta.prefill_block_tables))

    def decode(self, q, k_cache, v_cache, meta, out) -> None:
        o = self.with_kvcache(q.unsqueeze(1), k_cache, v_cache, cache_seqlens=meta.context_lens,
                              block_table=meta.decode_block_tables, softmax_scale=self.scale, causal=True)
        out.copy_(o.squeeze(1))
