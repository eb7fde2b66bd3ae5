"""Tiny float32 Llama models saved as HF folders, transformers' greedy decoding of them, our engine on
them, and our weights as a transformers model: the reference harness of the engine's parity tests."""
from __future__ import annotations

import random

import torch
from transformers import LlamaConfig
from transformers import LlamaForCausalLM as HFLlama

from llmbench.agent.engine.paged import PagedEngine
from llmbench.agent.model.llama import LlamaForCausalLM
from llmbench.agent.engine.scheduler import Batch, Sequence
from llmbench.agent.engine.types import EngineConfig, Request

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


def hf_state_dict(model: LlamaForCausalLM) -> dict[str, torch.Tensor]:
    """Our fused weights as HF tensor names (views, no copies)."""
    c, out = model.cfg, {}
    for name, t in model.state_dict().items():
        hf = "lm_head.weight" if name == "lm_head.weight" else f"model.{name}"
        if "qkv_proj" in name:
            q, k, v = t.split([c.q_size, c.kv_size, c.kv_size])
            out.update({hf.replace("qkv_proj", p): x for p, x in (("q_proj", q), ("k_proj", k), ("v_proj", v))})
        elif "gate_up_proj" in name:
            g, u = t.chunk(2)
            out.update({hf.replace("gate_up_proj", "gate_proj"): g, hf.replace("gate_up_proj", "up_proj"): u})
        else:
            out[hf] = t
    return out


def our_logits(engine: PagedEngine, prompt: list[int], chunk: int | None = None) -> torch.Tensor:
    """Logits at every prompt position, through the runner's batch preparation and paged cache; with
    chunk, the prompt goes in chunks of that many tokens, each after the last reading its prefix from
    the cache."""
    runner = engine.runner
    seq = Sequence(Request(id=0, prompt=prompt, max_new_tokens=1), None, (), 0)
    seq.block_table = list(range(engine.blocks.blocks_for(len(prompt))))
    parts = []
    for start in range(0, len(prompt), chunk or len(prompt)):
        seq.num_cached = start
        n = min(chunk or len(prompt), len(prompt) - start)
        input_ids, positions, meta, _ = runner.prepare(Batch(prefill=[(seq, n)]))
        parts.append(runner.model(input_ids, positions, meta, torch.arange(n, device=engine.device)))
    return torch.cat(parts)


def hf_from_ours(engine: PagedEngine) -> HFLlama:
    c = engine.runner.model.cfg
    config = LlamaConfig(**{**BASE, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_layers,
                            "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads,
                            "head_dim": c.head_dim, "intermediate_size": c.intermediate_size,
                            "vocab_size": c.vocab_size, "max_position_embeddings": c.max_position,
                            "rms_norm_eps": c.rms_norm_eps, "tie_word_embeddings": c.tie_embeddings,
                            "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta} if
                            c.rope_scaling is None else {"rope_type": "llama3", "rope_theta": c.rope_theta,
                                                         **vars(c.rope_scaling)}})
    with torch.device("meta"):
        hf = HFLlama(config)
    hf.load_state_dict(hf_state_dict(engine.runner.model), assign=True, strict=True)
    hf.model.rotary_emb = type(hf.model.rotary_emb)(config)  # its buffers were left on meta
    return hf.to(engine.device).eval()
