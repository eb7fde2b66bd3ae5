"""The KV cache one query holds: one rule for the agents' reservations and the coordinator's routing
and preflight."""
from __future__ import annotations

__all__ = ["kv_blocks", "kv_tokens"]


def kv_tokens(prompt_len: int, max_new_tokens: int) -> int:
    """Cache slots a query needs: its prompt and every output token fed back. The last sampled token is
    never fed back, so its K/V never needs a slot (a query of one new token needs only its prompt's)."""
    return prompt_len + max(max_new_tokens, 1) - 1


def kv_blocks(prompt_len: int, max_new_tokens: int, block_size: int) -> int:
    return -(-kv_tokens(prompt_len, max_new_tokens) // block_size)
