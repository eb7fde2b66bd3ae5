"""A synthetic dataset shaped like MLPerf's CNN/DailyMail prompts, so the benchmark runs anywhere.

Prompt lengths follow llmbench.common.cnndm (a log-normal fitted to the real prompts). Token ids are
uniform over the ordinary (non-special) part of the vocabulary. Everything is deterministic in the
seed, and sample i is the same whatever n is (a prefix of a bigger set is the smaller set).
"""
from __future__ import annotations

import numpy as np

from llmbench.common.cnndm import MAX_LEN, prompt_lengths
from llmbench.coordinator.data.dataset import Dataset

LLAMA3_BOS = 128000  # Llama-3's <|begin_of_text|>; ids from here up are special tokens
FALLBACK_BOS = 1  # BOS of Llama-2-style vocabularies (tiny test models)


def make_synthetic(n: int, vocab_size: int, seed: int = 0, *, max_len: int = MAX_LEN) -> Dataset:
    """n prompts with BOS first; max_len caps prompt length (e.g. a small model's context)."""
    if n < 1:
        raise ValueError(f"synthetic dataset needs at least 1 sample, got {n}")
    if vocab_size < 4:
        raise ValueError(f"vocab_size {vocab_size} is too small for a synthetic dataset")
    if max_len < 2:
        raise ValueError(f"max_len {max_len} leaves no room for a prompt")
    bos = LLAMA3_BOS if vocab_size > LLAMA3_BOS else FALLBACK_BOS
    ordinary_top = min(vocab_size, LLAMA3_BOS)  # exclusive upper bound of non-special ids
    ordinary_low = 0 if bos == LLAMA3_BOS else 3  # small vocabularies keep 0-2 for pad/BOS/EOS
    prompts = []
    for i, length in enumerate(prompt_lengths(n, seed, max_len)):
        rng = np.random.default_rng([seed, 1, i])
        ids = rng.integers(ordinary_low, ordinary_top, size=int(length), dtype=np.int32)
        ids[0] = bos
        prompts.append(ids)
    return Dataset(name=f"synthetic(n={n}, seed={seed})", prompts=prompts, references=None,
                   notes=[f"synthetic CNN/DM-shaped prompts, BOS {bos}, ids below {ordinary_top}"])
