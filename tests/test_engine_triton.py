"""The engine on the Triton attention backend gives the same greedy tokens as the torch reference
(chunked prefill mixed with decode). Without CUDA the kernels run in Triton's interpreter, which must
be switched on before triton is first imported (transformers imports it too), so the comparison runs
in a fresh interpreter: this file executed as a script."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch


def tokens(backend: str, model: str) -> dict[int, list[int]]:
    from llmbench.agent.attention import TritonAttention
    from llmbench.agent.engine import PagedEngine
    from llmbench.agent.offline import generate
    from llmbench.agent.types import EngineConfig, Request

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


def _fix_interpreter_indexing() -> None:
    # triton 3.6's interpreter int()s 1-element arrays, which numpy >= 2.4 refuses
    # (triton-lang/triton#9171); index through squeeze() as the upstream fix does.
    from triton.runtime import interpreter
    patch = interpreter._patch_lang_tensor

    def patch_with_index_fix(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patch_with_index_fix


@pytest.mark.slow
def test_triton_backend_matches_torch_reference():
    pytest.importorskip("triton")
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["triton"] == result["torch"]


if __name__ == "__main__":
    import tempfile

    from test_engine_parity import save_hf

    if os.environ.get("TRITON_INTERPRET") == "1":
        _fix_interpreter_indexing()
    with tempfile.TemporaryDirectory() as folder:
        save_hf(folder, seed=5)  # weights with std 0.1: attention far from uniform
        print(json.dumps({backend: tokens(backend, folder) for backend in ("triton", "torch")}))
