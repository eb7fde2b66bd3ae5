"""Paged attention: the step's metadata, the backends (a registry: one file each, registered by being
imported below) and the choice between them."""
from __future__ import annotations

import logging

import torch

from llmbench.agent.attention import flash, reference, triton_paged  # noqa: F401  (each registers itself)
from llmbench.agent.attention.base import (BACKENDS, AttentionBackend, AttentionMetadata, paged_attention,
                                           register, write_cache)
from llmbench.agent.attention.flash import FlashAttention
from llmbench.agent.attention.reference import TorchAttention
from llmbench.agent.attention.triton_paged import TritonAttention

__all__ = ["BACKENDS", "AttentionBackend", "AttentionMetadata", "FlashAttention", "TorchAttention",
           "TritonAttention", "names", "paged_attention", "register", "select_backend", "write_cache"]

log = logging.getLogger(__name__)


def names() -> list[str]:
    """What --attention takes: auto, then the registered backends."""
    return ["auto", *BACKENDS]


def select_backend(name: str, device: torch.device, block_size: int, head_dim: int,
                   fp8_kv: bool = False) -> AttentionBackend:
    """A backend by name; auto: the most preferred that does not refuse (flash-attn where installed and
    the cache fits it, else Triton on CUDA, else the torch reference)."""
    scale = head_dim ** -0.5
    if name == "auto":
        ranked = sorted(BACKENDS.values(), key=lambda cls: -cls.auto_preference)
        refusals = {cls.name: cls.refuses(device, block_size, head_dim, fp8_kv) for cls in ranked}
        chosen = next(cls for cls in ranked if refusals[cls.name] is None)
        if device.type == "cuda" and chosen is TorchAttention:
            log.warning("attention runs on the slow torch reference: %s", "; ".join(
                f"{n} {why}" for n, why in refusals.items() if why))
        return chosen(scale)
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}: use {', '.join(names())}")
    why = BACKENDS[name].refuses(device, block_size, head_dim, fp8_kv)
    if why is not None:
        raise ValueError(f"attention {name!r} {why}" + ("" if "use " in why else ": use --attention auto or torch"))
    return BACKENDS[name](scale)
