"""Tiny float32 Llama models saved as HF folders, transformers' greedy decoding of them, and our engine
on them: the reference harness of the engine's parity tests."""
from __future__ import annotations

import random

import torch
from transformers import LlamaConfig
from transformers import LlamaForCausalLM as HFLlama

from llmbench.agent.engine import PagedEngine
from llmbench.agent.types import EngineConfig

BASE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=1000, max_position_embeddings=1024,
            initializer_range=0.1, bos_token_id=None, eos_token_id=None, pad_token_id=None)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 128}


def save_hf(path, seed: int = 0, max_shard_size: str | None = None, **overrides) -> HFLlama:
    torch.manual_seed(seed)
    model = HFLlama(LlamaConfig(**{**BASE, **overrides})).eval()
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    return model


def hf_greedy(model: HFLlama, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def start_engine(path, overlap: bool = False, **cfg) -> PagedEngine:
    """overlap: run the overlapped loop (step N+1 launched before step N is read), which the engine
    keeps for CUDA; on CPU it computes the same tokens one loop turn later."""
    engine = PagedEngine(EngineConfig(model=str(path), device="cpu", dtype="float32", **cfg))
    engine.overlap = overlap
    engine.start()
    return engine


def prompts(vocab: int, lengths: list[int], seed: int = 1) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(n)] for n in lengths]
