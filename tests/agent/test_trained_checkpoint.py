"""A real trained checkpoint (SmolLM2-135M, tests/agent/trained_checkpoint.py) on real CNN/DailyMail
prompts: float32 greedy tokens == transformers' greedy decoding, in-process and through an agent."""
import json

import pytest

from llmbench.agent.engine.in_process import generate
from llmbench.agent.engine.types import FinishReason, Request
from cli_processes import llmbench
from hf_reference import hf_greedy, start_engine
from trained_checkpoint import cnndm_records, mlperf_prompts, smollm2  # noqa: F401 (smollm2: a fixture)

NEW_TOKENS = 16  # past the ~10 tokens where a wrong detail (rope base, GQA mapping, tied head) would show
PROMPTS = 3  # the shortest articles: ~150-180 prompt tokens each, so transformers' generate is quick on CPU


@pytest.fixture(scope="module")
def reference(smollm2):  # noqa: F811
    """The prompts and transformers' float32 greedy continuation of each."""
    import torch
    from transformers import AutoModelForCausalLM
    prompts = mlperf_prompts(smollm2, cnndm_records(PROMPTS, shortest=True))
    hf = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32, local_files_only=True).eval()
    return prompts, [hf_greedy(hf, p, NEW_TOKENS) for p in prompts]


@pytest.mark.slow
def test_float32_greedy_matches_transformers_in_process(smollm2, reference):  # noqa: F811
    prompts, expected = reference
    engine = start_engine(smollm2, max_batch=4, num_kv_blocks=64)
    try:
        got = generate(engine, [Request(id=i, prompt=p, max_new_tokens=NEW_TOKENS, ignore_eos=True)
                                for i, p in enumerate(prompts)], timeout=300)
    finally:
        engine.stop()
    for i, p in enumerate(prompts):
        assert got[i].finish == FinishReason.LENGTH
        assert got[i].tokens == expected[i], f"prompt {i} ({len(p)} tokens)"


@pytest.mark.slow
def test_float32_greedy_matches_transformers_through_an_agent(smollm2, reference, agents):  # noqa: F811
    prompts, expected = reference
    agent = agents("--model", str(smollm2), "--device", "cpu", "--dtype", "float32", "--num-kv-blocks", "64")
    agent.wait_serving()
    r = llmbench("generate", "--agent", agent.address, "--max-new-tokens", NEW_TOKENS, "--ignore-eos",
                 stdin="".join(json.dumps({"id": i, "tokens": p}) + "\n" for i, p in enumerate(prompts)), timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["id"] for row in rows] == list(range(len(prompts)))
    for row, want in zip(rows, expected):
        assert row["tokens"] == want and row["finish_reason"] == "length", row
    assert agent.terminate() == 0
    assert "ready: model" in agent.stderr() and "Traceback" not in agent.stderr()
