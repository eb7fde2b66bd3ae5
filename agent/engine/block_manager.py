"""Fixed-size KV blocks handed out from a free list; a double free is a bug and raises."""
from __future__ import annotations


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"need num_blocks > 0 and block_size > 0, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free = list(range(num_blocks - 1, -1, -1))  # a stack: recently freed blocks first
        self._in_use = bytearray(num_blocks)

    @property
    def num_free(self) -> int:
        return len(self._free)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= len(self._free)

    def allocate(self, num_blocks: int) -> list[int]:
        if num_blocks > len(self._free):
            raise RuntimeError(f"asked for {num_blocks} KV blocks, {len(self._free)} free")
        blocks = self._free[len(self._free) - num_blocks:]
        del self._free[len(self._free) - num_blocks:]
        for b in blocks:
            self._in_use[b] = 1
        return blocks

    def free(self, blocks: list[int]) -> None:
        if len(set(blocks)) != len(blocks) or not all(self._in_use[b] for b in blocks):
            raise RuntimeError(f"KV blocks freed twice: {sorted(b for b in blocks if not self._in_use[b])}")
        for b in blocks:
            self._in_use[b] = 0
        self._free.extend(blocks)
