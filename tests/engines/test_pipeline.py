"""Pipeline stages of the mini model over real gloo process groups (in-process, one thread per rank).

A replica of PP stages x TP ranks must give the logits and tokens of the unsplit single-rank model with the same
weights, with or without micro-batches.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from rank_threads import run_ranks

from chaosbench.engines.mini import pipeline
from chaosbench.engines.mini.config import ModelConfig
from chaosbench.engines.mini.model import ModelShard, SeqSlice, StepBatch, sample, split_batch
from chaosbench.engines.mini.pipeline import StageLinks, run_stage

CFG = ModelConfig(layers=4, hidden=64, heads=4, vocab=512, max_seq_len=128, seed=11)
BLOCK, BLOCKS = 4, 16
PROMPTS = ((1, 40, 41, 42, 43), (1, 50, 51), (1, 60, 61, 62, 63, 64), (1, 70))
TEMPS = ((0.0, 0), (0.8, 3), (0.0, 0), (1.2, 9))


def _tables() -> list[tuple[int, ...]]:
    tables, nxt = [], 0
    for p in PROMPTS:
        n = -(-(len(p) + 1) // BLOCK)  # room for one decode token
        tables.append(tuple(range(nxt, nxt + n)))
        nxt += n
    return tables


def _batch(step: int, new: list[tuple[int, ...]], computed: list[int]) -> StepBatch:
    """Each sequence's ``new`` tokens after ``computed`` cached ones."""
    tokens, positions, slots, seqs = [], [], [], []
    for toks, done, table, (temp, seed) in zip(new, computed, _tables(), TEMPS, strict=True):
        start = len(tokens)
        for i, tok in enumerate(toks):
            pos = done + i
            tokens.append(tok)
            positions.append(pos)
            slots.append(table[pos // BLOCK] * BLOCK + pos % BLOCK)
        seqs.append(SeqSlice(start=start, length=len(toks), context_len=done + len(toks), block_table=table,
                             temperature=temp, seed=seed))
    return StepBatch(step=step, tokens=tuple(tokens), positions=tuple(positions), slots=tuple(slots),
                     seqs=tuple(seqs))


DECODE = (7, 8, 9, 10)  # fixed next tokens: the decode step is the same whatever was sampled


def _steps() -> list[StepBatch]:
    """A prefill of four sequences, then one decode step of each."""
    return [_batch(1, list(PROMPTS), [0] * len(PROMPTS)), _batch(2, [(t,) for t in DECODE], [len(p) for p in PROMPTS])]


def _no_throttle(_: float) -> None:
    return None


def _reference() -> tuple[list[torch.Tensor], list[list[int]]]:
    """The unsplit model on one rank: last-token logits and sampled tokens of each step."""
    shard = ModelShard(CFG, 0, 1, BLOCKS, BLOCK)
    logits = [shard.forward(b, lambda t: None, _no_throttle) for b in _steps()]
    tokens = [sample(lg, b.seqs, [s.context_len for s in b.seqs]) for lg, b in zip(logits, _steps(), strict=True)]
    return logits, tokens


def _run_replica(pp: int, tp: int, micro_batches: int, monkeypatch: pytest.MonkeyPatch,
                 p2p_calls: list[int] | None = None) -> tuple[list[torch.Tensor], list[list[int]]]:
    """One replica of pp x tp ranks, each a thread with its own gloo groups: the replica's world (point to point)
    and its stage's tensor-parallel group. Returns the token rank's logits per step (micro-batches concatenated)
    and its tokens."""
    store = dist.HashStore()
    size, token_rank = pp * tp, (pp - 1) * tp
    shards = [ModelShard(CFG, r % tp, tp, BLOCKS, BLOCK, stage=r // tp, stages=pp) for r in range(size)]
    seen: list[torch.Tensor] = []
    real_sample = pipeline.sample

    def recording_sample(logits: torch.Tensor, *args):
        seen.append(logits.clone())
        return real_sample(logits, *args)

    monkeypatch.setattr(pipeline, "sample", recording_sample)
    results: dict[int, list[list[int] | None]] = {}

    def run(rank: int) -> None:
        timeout = timedelta(seconds=30)
        world = dist.ProcessGroupGloo(dist.PrefixStore("world", store), rank, size, timeout)
        stage, t = divmod(rank, tp)
        group = dist.ProcessGroupGloo(dist.PrefixStore(f"tp{stage}", store), t, tp, timeout)

        def all_reduce(x: torch.Tensor) -> None:
            group.allreduce([x]).wait()

        links = StageLinks(all_reduce=all_reduce,
                           send=(lambda x, tag: world.send([x], rank + tp, tag)) if stage < pp - 1 else None,
                           recv=(lambda x, tag: world.recv([x], rank - tp, tag)) if stage > 0 else None,
                           before_p2p=(lambda: p2p_calls.append(rank)) if p2p_calls is not None else (lambda: None))
        results[rank] = [run_stage(shards[rank], b, links, _no_throttle, micro_batches) for b in _steps()]

    run_ranks(size, run)
    assert all(results[r] == [None, None] for r in range(size) if r != token_rank), "one rank returns the tokens"
    per_step = len(seen) // 2
    logits = [torch.cat(seen[:per_step]), torch.cat(seen[per_step:])]
    return logits, [list(t) for t in results[token_rank]]  # type: ignore[arg-type]


@pytest.mark.parametrize(("pp", "tp", "micro_batches"), [(2, 1, 1), (2, 2, 1), (2, 2, 2), (4, 1, 4), (2, 2, 9)])
def test_pipeline_equals_unsplit_model(pp: int, tp: int, micro_batches: int, monkeypatch: pytest.MonkeyPatch) -> None:
    ref_logits, ref_tokens = _reference()
    logits, tokens = _run_replica(pp, tp, micro_batches, monkeypatch)
    assert tokens == ref_tokens
    for got, ref in zip(logits, ref_logits, strict=True):
        assert got.shape == (len(PROMPTS), CFG.vocab)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    assert (ref_logits[0][0] - ref_logits[0][1]).abs().max() > 1e-3  # rows differ: the check is not vacuous


def test_micro_batches_give_the_same_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    one = _run_replica(2, 1, 1, monkeypatch)[1]
    four = _run_replica(2, 1, 4, monkeypatch)[1]
    assert one == four


def test_stage_chain_is_bit_exact_with_the_unsplit_forward() -> None:
    """Without tensor parallelism, stages chained by hand run exactly the unsplit model's ops."""
    noop = lambda t: None
    full = ModelShard(CFG, 0, 1, BLOCKS, BLOCK)
    stages = [ModelShard(CFG, 0, 1, BLOCKS, BLOCK, stage=p, stages=4) for p in range(4)]
    assert [s.first_layer for s in stages] == [0, 1, 2, 3] and stages[0].embed is not None
    assert stages[1].embed is None and stages[2].lm_head is None and stages[3].lm_head is not None
    for b in _steps():
        x = None
        for st in stages:
            x = st.forward_stage(b, x, noop, _no_throttle)
        assert torch.equal(x, full.forward(b, noop, _no_throttle))


def test_every_point_to_point_passes_the_hang_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    _run_replica(2, 1, 2, monkeypatch, p2p_calls=calls)
    # 2 steps x 2 micro-batches: stage 0 (rank 0) sends each, stage 1 (rank 1) receives each
    assert sorted(calls) == [0] * 4 + [1] * 4


def test_split_batch_keeps_whole_sequences_in_order() -> None:
    prefill = _steps()[0]
    for parts in range(1, 6):
        mbs = split_batch(prefill, parts)
        assert len(mbs) == min(parts, len(PROMPTS))
        assert sum((mb.tokens for mb in mbs), ()) == prefill.tokens
        assert sum((mb.slots for mb in mbs), ()) == prefill.slots
        assert [s.context_len for mb in mbs for s in mb.seqs] == [s.context_len for s in prefill.seqs]
        for mb in mbs:
            assert mb.seqs[0].start == 0 and mb.step == prefill.step
            assert mb.seqs[-1].start + mb.seqs[-1].length == len(mb.tokens)
    assert [len(mb.tokens) for mb in split_batch(prefill, 2)] == [8, 8]  # balanced by tokens: 5+3 | 6+2


def test_stages_overlap_with_micro_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compute stretched by a throttle (as the emulated device does): with 4 micro-batches over 2 stages the
    step takes about (4 + 1) stage-slots, not the 2 x 4 of stages taking turns."""
    slot_s = 0.02
    monkeypatch.setattr(sys.modules[__name__], "_no_throttle", lambda _s: time.sleep(slot_s))
    serial0 = time.perf_counter()
    stages = [ModelShard(CFG, 0, 1, BLOCKS, BLOCK, stage=p, stages=2) for p in range(2)]
    for mb in split_batch(_steps()[0], 4):
        x = None
        for st in stages:
            x = st.forward_stage(mb, x, lambda t: None, _no_throttle)
    serial = time.perf_counter() - serial0
    piped0 = time.perf_counter()
    _run_replica(2, 1, 4, monkeypatch)  # a prefill and a decode step
    piped = (time.perf_counter() - piped0) / 2
    print(f"pipelined step {piped:.3f}s, stages in turn {serial:.3f}s")
    assert piped < 0.8 * serial, (piped, serial)
