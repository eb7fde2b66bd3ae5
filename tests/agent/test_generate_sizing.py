"""`llmbench generate` in-process sizes the engine to its job: a KV cache for its prompts (it used to
take 0.9 of memory, 16 GiB and 20 s for two prompts) and a batch no larger than the prompt count."""
from __future__ import annotations

import logging

from llmbench.agent.commands.generate import Prompt, generate_local
from llmbench.agent.engine.types import EngineConfig
from llmbench.common.kv import kv_blocks


def test_two_prompts_get_a_kv_cache_for_two_prompts(caplog):
    prompts = [Prompt(line=1, id="a", tokens=[1, 5, 6, 7], text=None),
               Prompt(line=2, id="b", tokens=[1] + [9] * 40, text=None)]
    need = kv_blocks(4, 6, 16) + kv_blocks(41, 6, 16)
    with caplog.at_level(logging.INFO, logger="llmbench.agent.engine.runner"):
        results = generate_local(EngineConfig(model="tiny", device="cpu"), prompts, 6, ignore_eos=True)
    assert [len(r.tokens) for r in results] == [6, 6] and not any(r.error for r in results)
    sized = [r.getMessage() for r in caplog.records if r.getMessage().startswith("KV cache:")]
    assert len(sized) == 1 and sized[0].startswith(f"KV cache: {need} blocks of 16 tokens"), sized
    assert "capped at" in sized[0] and "for the job" in sized[0]
    assert not [r for r in caplog.records if "fewer tokens than max_context" in r.getMessage()]
