"""The KV-block pool the engine core allocates from (paged KV cache bookkeeping).

Every rank holds the same block indices for its own heads, so one pool on the driver
describes all ranks. ``capacity`` is the number of blocks that may be in use; it is the
smallest usable pool over the ranks and shrinks when a rank's device memory is taken
(the device control's ``mem_pool_fraction``: emulated GPU memory pressure).
"""

from __future__ import annotations


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.capacity = num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))  # pop() hands out low indices first

    @property
    def used(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def overcommitted(self) -> bool:
        return self.used > self.capacity

    def usage(self) -> float:
        """Share of the usable pool in use (vllm:kv_cache_usage_perc), 1.0 when nothing is usable."""
        if self.capacity <= 0:
            return 1.0
        return min(1.0, self.used / self.capacity)

    def set_capacity(self, blocks: int) -> None:
        self.capacity = max(0, min(self.num_blocks, blocks))

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def can_allocate(self, n: int) -> bool:
        return n <= 0 or self.used + n <= self.capacity

    def allocate(self, n: int) -> list[int]:
        if not self.can_allocate(n):
            raise MemoryError(f"cannot allocate {n} blocks: {self.used}/{self.capacity} in use")
        return [self._free.pop() for _ in range(max(0, n))]

    def free(self, blocks: list[int]) -> None:
        self._free.extend(reversed(blocks))
