"""The engine on the Triton attention backend gives the same greedy tokens as the torch reference
(chunked prefill mixed with decode). Without CUDA the kernels run in Triton's interpreter (conftest.py
switches it on before anything imports triton)."""
from __future__ import annotations

import pytest
import torch

from hf_reference import save_hf


def tokens(backend: str, model: str) -> dict[int, list[int]]:
    from llmbench.agent.attention import TritonAttention
    from llmbench.agent.engine.paged import PagedEngine
    from llmbench.agent.engine.in_process import generate
    from llmbench.agent.engine.types import EngineConfig, Request

    device = "cuda" if torch.cuda.is_available() else "cpu"
    engine = PagedEngine(EngineConfig(model=model, device=device, dtype="float32", max_batch=4,
                                      max_step_tokens=32, num_kv_blocks=64, block_size=16))
    engine.start()
    if backend == "triton":  # select_backend refuses Triton on CPU, so swap it in after start
        engine.runner.model.backend = TritonAttention(engine.runner.model.cfg.head_dim ** -0.5)
    gen = torch.Generator().manual_seed(3)
    lengths = [3, 40, 17, 70]
    try:
        out = generate(engine, [Request(id=i, prompt=torch.randint(3, 1000, (n,), generator=gen).tolist(),
                                        max_new_tokens=8, ignore_eos=True)
                                for i, n in enumerate(lengths)], timeout=600)
    finally:
        engine.stop()
    assert all(g.error is None for g in out.values()), [g.error for g in out.values()]
    return {i: g.tokens for i, g in out.items()}


@pytest.mark.slow
def test_triton_backend_matches_torch_reference(tmp_path):
    pytest.importorskip("triton")
    save_hf(tmp_path, seed=5)  # weights with std 0.1: attention far from uniform
    assert tokens("triton", str(tmp_path)) == tokens("torch", str(tmp_path))
