"""Continuous batching over the KV-block pool: admission, decode growth, preemption by recompute.

Each step: running sequences decode one token (growing by a block when theirs is full);
when the pool cannot hold them, the newest running sequence is preempted (its blocks are
freed, it goes back to the front of the queue and is recomputed later). Waiting sequences
are admitted first-come first-served while blocks, slots and the token budget allow.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from chaosbench.engines.mini.kv_pool import BlockPool
from chaosbench.engines.mini.model import SeqSlice, StepBatch


@dataclass
class Sequence:
    rid: str
    prompt: list[int]
    max_tokens: int
    temperature: float = 1.0
    seed: int = 0
    ignore_eos: bool = False
    arrival: float = field(default_factory=time.time)
    output: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    computed: int = 0  # tokens whose K/V are in the cache
    first_scheduled: float | None = None
    finish_reason: str | None = None

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output


@dataclass(frozen=True)
class Scheduled:
    batch: StepBatch
    seqs: tuple[Sequence, ...]
    prefill_tokens: int
    preempted: int


class Scheduler:
    def __init__(self, pool: BlockPool, *, max_num_seqs: int, max_batched_tokens: int, max_seq_len: int, eos: int):
        self.pool = pool
        self.max_num_seqs = max_num_seqs
        self.max_batched_tokens = max_batched_tokens
        self.max_seq_len = max_seq_len
        self.eos = eos
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.step_index = 0
        self.preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def abort(self, rid: str) -> Sequence | None:
        for seq in list(self.running) + list(self.waiting):
            if seq.rid == rid:
                self._release(seq)
                if seq in self.running:
                    self.running.remove(seq)
                else:
                    self.waiting.remove(seq)
                return seq
        return None

    def preempt_all(self) -> int:
        """Drop every cached sequence (after a rank restart the KV caches are gone)."""
        n = len(self.running)
        while self.running:
            self._preempt(self.running[-1])
        return n

    def schedule(self) -> Scheduled:
        before = self.preemptions
        while self.pool.overcommitted and self.running:
            self._preempt(self.running[-1])
        decodes = self._grow_running()
        prefills = self._admit()
        seqs = tuple(decodes + prefills)
        self.step_index += 1
        batch = self._batch(seqs)
        prefill_tokens = sum(len(s.tokens) - s.computed for s in prefills)
        return Scheduled(batch=batch, seqs=seqs, prefill_tokens=prefill_tokens, preempted=self.preemptions - before)

    def update(self, scheduled: Scheduled, tokens: list[int]) -> list[Sequence]:
        """Append each sequence's sampled token; return the sequences that finished (blocks freed)."""
        finished = []
        for seq, slc, tok in zip(scheduled.seqs, scheduled.batch.seqs, tokens, strict=True):
            if seq not in self.running:
                continue  # aborted or preempted meanwhile
            seq.computed = slc.context_len
            seq.output.append(tok)
            if tok == self.eos and not seq.ignore_eos:
                seq.finish_reason = "stop"
            elif len(seq.output) >= seq.max_tokens or len(seq.tokens) >= self.max_seq_len:
                seq.finish_reason = "length"
            if seq.finish_reason:
                self._release(seq)
                self.running.remove(seq)
                finished.append(seq)
        return finished

    def _grow_running(self) -> list[Sequence]:
        scheduled: list[Sequence] = []
        for seq in list(self.running):
            if seq not in self.running:
                continue  # preempted to make room for an earlier one
            need = self.pool.blocks_for(len(seq.tokens)) - len(seq.blocks)
            while not self.pool.can_allocate(need) and self.running[-1] is not seq:
                self._preempt(self.running[-1])
            if not self.pool.can_allocate(need):
                self._preempt(seq)
                continue
            seq.blocks += self.pool.allocate(need)
            scheduled.append(seq)
        return scheduled

    def _admit(self) -> list[Sequence]:
        admitted: list[Sequence] = []
        budget = self.max_batched_tokens - len(self.running)
        while self.waiting and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            n_tokens = len(seq.tokens)
            need = self.pool.blocks_for(n_tokens)
            if n_tokens > budget and admitted:
                break
            if not self.pool.can_allocate(need):
                break
            self.waiting.popleft()
            seq.blocks = self.pool.allocate(need)
            seq.computed = 0
            if seq.first_scheduled is None:
                seq.first_scheduled = time.time()
            self.running.append(seq)
            admitted.append(seq)
            budget -= n_tokens
        return admitted

    def _batch(self, seqs: tuple[Sequence, ...]) -> StepBatch:
        bs = self.pool.block_size
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        slices: list[SeqSlice] = []
        for seq in seqs:
            all_tokens = seq.tokens
            start = len(tokens)
            for pos in range(seq.computed, len(all_tokens)):
                tokens.append(all_tokens[pos])
                positions.append(pos)
                slots.append(seq.blocks[pos // bs] * bs + pos % bs)
            slices.append(SeqSlice(start=start, length=len(tokens) - start, context_len=len(all_tokens),
                                   block_table=tuple(seq.blocks), temperature=seq.temperature, seed=seq.seed))
        return StepBatch(step=self.step_index, tokens=tuple(tokens), positions=tuple(positions),
                         slots=tuple(slots), seqs=tuple(slices))

    def _preempt(self, seq: Sequence) -> None:
        self._release(seq)
        self.running.remove(seq)
        seq.computed = 0
        self.waiting.appendleft(seq)
        self.preemptions += 1

    def _release(self, seq: Sequence) -> None:
        self.pool.free(seq.blocks)
        seq.blocks = []
