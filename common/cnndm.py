"""The shape of MLPerf's CNN/DailyMail prompts, for synthetic workloads.

Prompt lengths follow a log-normal fitted to the real prompts (Llama-3 tokenizer, MLPerf template,
BOS): median 766 and mean ~840 tokens, p95 ~1,600, clipped to the real range [141, 2540].
Sample i has the same length whatever n is, so a prefix of a bigger set is the smaller set.
"""
from __future__ import annotations

import math

import numpy as np

MEDIAN_LEN = 766
SIGMA = 0.45  # balances the real mean (833) against the real p95 (1,675)
MIN_LEN, MAX_LEN = 141, 2540
OUTPUT_LEN = 128  # MLPerf's max_new_tokens; real outputs are ~128 tokens


def prompt_lengths(n: int, seed: int = 0, max_len: int = MAX_LEN) -> np.ndarray:
    rng = np.random.default_rng([seed, 0])
    lengths = np.exp(rng.normal(math.log(MEDIAN_LEN), SIGMA, size=n))
    return np.clip(np.rint(lengths), min(MIN_LEN, max_len), max_len).astype(np.int64)
