"""Greedy tokens of our engine == transformers' LlamaForCausalLM.generate on tiny float32 models."""
from __future__ import annotations

import random
import threading

import pytest
import torch
from transformers import LlamaConfig
from transformers import LlamaForCausalLM as HFLlama

from llmbench.agent.engine import PagedEngine
from llmbench.agent.offline import generate
from llmbench.agent.types import EngineConfig, FinishReason, Request

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


CONFIGS = {
    "gqa2": {},
    "one_kv_head": dict(num_key_value_heads=1),
    "gqa3_hd8": dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=2),
    "head_dim_32": dict(head_dim=32),
    "llama3_rope": dict(rope_parameters=LLAMA3_ROPE, num_key_value_heads=4),
    "odd_vocab_tied": dict(vocab_size=997, tie_word_embeddings=True),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_greedy_matches_transformers(tmp_path, name):
    hf = save_hf(tmp_path, **CONFIGS[name])
    vocab = hf.config.vocab_size
    engine = start_engine(tmp_path, max_batch=8)
    try:
        ps = prompts(vocab, [1, 9, 70])
        got = generate(engine, [Request(id=i, prompt=p, max_new_tokens=12, ignore_eos=True)
                                for i, p in enumerate(ps)], timeout=60)
        for i, p in enumerate(ps):
            assert got[i].finish == FinishReason.LENGTH
            assert got[i].tokens == hf_greedy(hf, p, 12), f"{name}: prompt {i} (len {len(p)})"
    finally:
        engine.stop()


def test_sharded_checkpoint(tmp_path):
    hf = save_hf(tmp_path, seed=3, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("*.safetensors"))) > 2
    engine = start_engine(tmp_path)
    try:
        p = prompts(1000, [33], seed=5)[0]
        got = generate(engine, [Request(id=7, prompt=p, max_new_tokens=10)], timeout=60)
        assert got[7].tokens == hf_greedy(hf, p, 10)
    finally:
        engine.stop()


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [False, True], ids=["waited", "overlapped"])
def test_mixed_lengths_chunked_prefill_and_late_arrivals(tmp_path, overlap):
    """Prompts of 3..300 tokens, a small token budget (prefill split into chunks and mixed with
    decode tokens), and a second wave submitted while the first is decoding."""
    hf = save_hf(tmp_path, seed=7, rope_parameters=LLAMA3_ROPE)
    engine = start_engine(tmp_path, overlap, max_batch=6, max_step_tokens=24, num_kv_blocks=200, block_size=8)
    steps = []
    launch = engine.runner.launch

    def recording_launch(batch):
        steps.append(([(s.prompt_len, n) for s, n in batch.prefill], len(batch.decode)))
        return launch(batch)

    engine.runner.launch = recording_launch
    first = prompts(1000, [3, 300, 17, 120], seed=11)
    second = prompts(1000, [250, 5, 64, 31, 190], seed=12)
    n_new = 16
    results = {}
    try:
        wave1 = threading.Thread(target=lambda: results.update(generate(
            engine, [Request(id=i, prompt=p, max_new_tokens=n_new, ignore_eos=True)
                     for i, p in enumerate(first)], timeout=120)))
        wave1.start()
        while engine.stats().output_tokens_total < 3:
            assert wave1.is_alive()
            threading.Event().wait(0.005)
        results.update(generate(engine, [Request(id=100 + i, prompt=p, max_new_tokens=n_new, ignore_eos=True)
                                         for i, p in enumerate(second)], timeout=120))
        wave1.join()
    finally:
        engine.stop()
    assert any(decode and any(n < plen for plen, n in prefill) for prefill, decode in steps), \
        "no step mixed a partial prefill chunk with decode tokens"
    assert max(sum(n for _, n in prefill) + decode for prefill, decode in steps) <= 24
    for qid, p in [(i, p) for i, p in enumerate(first)] + [(100 + i, p) for i, p in enumerate(second)]:
        assert results[qid].tokens == hf_greedy(hf, p, n_new), f"query {qid} (prompt {len(p)})"
