"""KV-block pool and continuous-batching scheduler: admission, growth, preemption, capacity changes."""

from __future__ import annotations

import pytest

from chaosbench.engines.mini.kv_pool import BlockPool
from chaosbench.engines.mini.scheduler import Scheduler, Sequence

EOS = 2


def _sched(blocks: int = 8, block_size: int = 4, max_num_seqs: int = 8, budget: int = 1024) -> Scheduler:
    return Scheduler(BlockPool(blocks, block_size), max_num_seqs=max_num_seqs, max_batched_tokens=budget,
                     max_seq_len=64, eos=EOS)


def _seq(rid: str, prompt_len: int, max_tokens: int = 10) -> Sequence:
    return Sequence(rid=rid, prompt=[1] + [10] * (prompt_len - 1), max_tokens=max_tokens, ignore_eos=True)


def _step(s: Scheduler, token: int = 7):
    out = s.schedule()
    finished = s.update(out, [token] * len(out.seqs))
    return out, finished


def test_pool_allocates_within_capacity_and_frees() -> None:
    pool = BlockPool(4, 16)
    got = pool.allocate(3)
    assert sorted(got) == [0, 1, 2] and pool.used == 3
    assert not pool.can_allocate(2)
    with pytest.raises(MemoryError):
        pool.allocate(2)
    pool.free(got)
    assert pool.used == 0 and pool.usage() == 0.0
    pool.set_capacity(1)
    assert pool.can_allocate(1) and not pool.can_allocate(2)
    assert pool.blocks_for(17) == 2 and pool.blocks_for(16) == 1


def test_admission_is_limited_by_free_blocks() -> None:
    s = _sched(blocks=4, block_size=4)
    for i in range(3):
        s.add(_seq(f"r{i}", prompt_len=6))  # 2 blocks each
    out, _ = _step(s)
    assert [q.rid for q in out.seqs] == ["r0", "r1"]
    assert [q.rid for q in s.waiting] == ["r2"]
    assert out.batch.tokens[:6] == (1, 10, 10, 10, 10, 10) and len(out.batch.tokens) == 12
    assert out.prefill_tokens == 12


def test_decode_grows_by_a_block_at_the_boundary() -> None:
    s = _sched(blocks=8, block_size=4)
    s.add(_seq("a", prompt_len=4))
    out, _ = _step(s)  # prefill: 4 tokens in 1 block; sampled token makes 5
    assert len(s.running[0].blocks) == 1
    out, _ = _step(s)  # decode token at position 4 needs a second block
    seq = s.running[0]
    assert len(seq.blocks) == 2
    assert out.batch.positions == (4,)
    assert out.batch.slots == (seq.blocks[1] * 4 + 0,)
    assert out.batch.seqs[0].context_len == 5


def test_preempts_newest_when_pool_runs_out_and_recomputes_it() -> None:
    s = _sched(blocks=4, block_size=4)
    s.add(_seq("old", prompt_len=4, max_tokens=20))
    s.add(_seq("new", prompt_len=4, max_tokens=20))
    _step(s)
    _step(s)  # both grow to 2 blocks: pool full
    assert s.pool.used == 4
    for _ in range(3):  # positions 5..7 fit in the second blocks
        _step(s)
    assert s.preemptions == 0
    out, _ = _step(s)  # position 8: old needs a 3rd block, so new is preempted
    assert s.preemptions == 1 and out.preempted == 1
    assert [q.rid for q in out.seqs] == ["old"]
    assert [q.rid for q in s.running] == ["old"]
    assert s.waiting[0].rid == "new" and s.waiting[0].blocks == [] and s.waiting[0].computed == 0
    generated = len(s.waiting[0].output)
    assert generated > 0  # its tokens are kept and recomputed on readmission


def test_capacity_shrink_preempts_and_blocks_admission() -> None:
    s = _sched(blocks=8, block_size=4)
    for i in range(3):
        s.add(_seq(f"r{i}", prompt_len=6))
    _step(s)
    assert len(s.running) == 3 and s.pool.used == 6
    s.pool.set_capacity(3)  # a rank's device memory was taken
    out, _ = _step(s)
    assert out.preempted == 2
    assert [q.rid for q in s.running] == ["r0"]
    assert s.pool.used <= 3
    assert [q.rid for q in s.waiting] == ["r1", "r2"]  # oldest first
    s.pool.set_capacity(8)
    out, _ = _step(s)
    assert {q.rid for q in s.running} == {"r0", "r1", "r2"}
    readmitted = [sl for q, sl in zip(out.seqs, out.batch.seqs) if q.rid == "r1"][0]
    assert readmitted.length == readmitted.context_len == 6 + 1  # prompt plus its sampled token, recomputed


def test_finish_by_length_and_eos_frees_blocks() -> None:
    s = _sched()
    s.add(_seq("len", prompt_len=3, max_tokens=2))
    eos_seq = Sequence(rid="eos", prompt=[1, 5], max_tokens=10)
    s.add(eos_seq)
    out = s.schedule()
    finished = s.update(out, [7, EOS])
    assert [f.rid for f in finished] == ["eos"] and eos_seq.finish_reason == "stop"
    _, finished = _step(s)
    assert [f.rid for f in finished] == ["len"] and finished[0].finish_reason == "length"
    assert s.pool.used == 0 and not s.has_work()


def test_abort_and_max_num_seqs() -> None:
    s = _sched(max_num_seqs=1)
    s.add(_seq("a", 3))
    s.add(_seq("b", 3))
    out, _ = _step(s)
    assert [q.rid for q in out.seqs] == ["a"]
    assert s.abort("a") is not None and s.pool.used == 0
    assert s.abort("nope") is None
    out, _ = _step(s)
    assert [q.rid for q in out.seqs] == ["b"]


def test_preempt_all_after_restart_keeps_outputs() -> None:
    s = _sched()
    s.add(_seq("a", 3))
    _step(s)
    before = s.preemptions
    assert s.preempt_all() == 1
    assert s.pool.used == 0 and s.waiting[0].output == [7]
    out, _ = _step(s)
    assert out.batch.seqs[0].length == 4
    assert s.preemptions == before + 1
