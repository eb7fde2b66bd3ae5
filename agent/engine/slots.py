"""Where a step's tokens live in the paged KV cache: block tables and cache slots, one rule for the
eager path (runner.py) and the CUDA-graph path (cuda_graphs.py)."""
from __future__ import annotations

import numpy as np

__all__ = ["block_tables", "decode_slots"]


def block_tables(seqs: list) -> np.ndarray:
    """[len(seqs), widest table] int32: each sequence's blocks, zero-padded."""
    tables = np.zeros((len(seqs), max(len(s.block_table) for s in seqs)), dtype=np.int32)
    for i, s in enumerate(seqs):
        tables[i, :len(s.block_table)] = s.block_table
    return tables


def decode_slots(seqs: list, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, cache slots) int64 of each decoding sequence's input token: its newest token."""
    positions = np.fromiter((len(s.tokens) - 1 for s in seqs), dtype=np.int64, count=len(seqs))
    blocks = np.fromiter((s.block_table[p // block_size] for s, p in zip(seqs, positions)), dtype=np.int64,
                         count=len(seqs))
    return positions, blocks * block_size + positions % block_size
