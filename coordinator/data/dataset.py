"""What every dataset loader produces and the coordinator consumes."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Dataset:
    name: str
    prompts: list[np.ndarray]  # int32 token ids per sample, BOS included, in dataset order
    references: list[str] | None = None  # reference summaries (accuracy needs them)
    eos_ids: tuple[int, ...] = (128009,)
    max_new_tokens: int = 128
    min_new_tokens: int = 1
    notes: list[str] = field(default_factory=list)  # shown to the user (e.g. refused prompts)
    # (--tokenizer as given, its number of tokens) when the prompt ids were made here from text; None when
    # they came with the file (tok_input) or were drawn for the model: an id the model lacks is then the
    # tokenizer's fault, not the file's.
    tokenized_by: tuple[str, int] | None = None

    def __len__(self) -> int:
        return len(self.prompts)
