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

    def __len__(self) -> int:
        return len(self.prompts)
