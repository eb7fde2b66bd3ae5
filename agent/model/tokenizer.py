"""The model folder's HF tokenizer, loaded from local disk only (never the hub)."""
from __future__ import annotations

import os
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def load_tokenizer(model_path: str | None) -> Any | None:
    """The tokenizer saved in an HF model folder, or None when there is none (presets, bare weights)."""
    if not model_path or not any(os.path.exists(os.path.join(model_path, f)) for f in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer  # slow import: only agents that have a tokenizer pay for it
    try:
        return AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    except Exception as exc:
        raise ValueError(f"cannot load the tokenizer in {model_path}: {exc}") from exc


def encode(tokenizer: Any, text: str) -> list[int]:
    """Prompt ids as the model expects them (BOS added when the tokenizer adds one)."""
    return list(tokenizer.encode(text))


def decode(tokenizer: Any, tokens: list[int]) -> str:
    return tokenizer.decode(tokens, skip_special_tokens=True)
