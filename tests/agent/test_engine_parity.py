"""Greedy tokens of our engine == transformers' LlamaForCausalLM.generate on tiny float32 models."""
from __future__ import annotations

import threading

import pytest

from llmbench.agent.engine.in_process import generate
from llmbench.agent.engine.types import FinishReason, Request
from hf_reference import LLAMA3_ROPE, hf_greedy, prompts, save_hf, start_engine

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
