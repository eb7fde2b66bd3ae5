"""The torch reference: one SDPA call per sequence over K/V gathered from the cache. Exact, slow, syncs;
runs anywhere."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from llmbench.agent.attention.base import register


def _gather(cache: torch.Tensor, block_table: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    block_size = cache.shape[1]
    blocks = block_table[: (length + block_size - 1) // block_size]
    return cache[blocks].flatten(0, 1)[:length].to(dtype)


@register
class TorchAttention:
    name = "torch"
    auto_preference = 1

    def __init__(self, scale: float):
        self.scale = scale

    @staticmethod
    def refuses(device, block_size, head_dim, fp8_kv) -> str | None:
        return None

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q_len, k_len = q.shape[0], k.shape[0]
        mask = None
        if 1 < q_len < k_len:  # a later prefill chunk: causal, aligned to the end of the keys
            mask = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(k_len - q_len)
        o = F.scaled_dot_product_attention(
            q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask,
            is_causal=mask is None and q_len > 1, scale=self.scale, enable_gqa=True)
        return o.transpose(0, 1)

    def prefill(self, q, k, v, k_cache, v_cache, meta, out) -> None:
        cu = meta.cu_seqlens_q.tolist()
        for i, seq_len in enumerate(meta.seq_lens.tolist()):
            table, own = meta.prefill_block_tables[i], slice(cu[i], cu[i + 1])
            prefix = seq_len - (cu[i + 1] - cu[i])
            out[own] = self._attend(q[own], torch.cat([_gather(k_cache, table, prefix, q.dtype), k[own]]),
                                    torch.cat([_gather(v_cache, table, prefix, q.dtype), v[own]]))

    def decode(self, q, k_cache, v_cache, meta, out) -> None:
        for i, ctx_len in enumerate(meta.context_lens.tolist()):
            table = meta.decode_block_tables[i]
            out[i:i + 1] = self._attend(q[i:i + 1], _gather(k_cache, table, ctx_len, q.dtype),
                                        _gather(v_cache, table, ctx_len, q.dtype))
