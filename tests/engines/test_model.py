"""Tensor-parallel correctness of the mini model over real gloo process groups (in-process, one thread per rank)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from rank_threads import run_ranks

from chaosbench.engines.mini.config import ModelConfig
from chaosbench.engines.mini.model import ModelShard, SeqSlice, StepBatch, sample

CFG = ModelConfig(layers=2, hidden=128, heads=4, vocab=512, max_seq_len=128, seed=7)
BLOCK = 4


def _prefill() -> StepBatch:
    """Two sequences of 6 and 3 tokens in blocks (0, 1) and (2,)."""
    a = SeqSlice(start=0, length=6, context_len=6, block_table=(0, 1), temperature=0.0)
    b = SeqSlice(start=6, length=3, context_len=3, block_table=(2,), temperature=0.8, seed=3)
    return StepBatch(step=1, tokens=(1, 40, 41, 42, 43, 44, 1, 50, 51), positions=(0, 1, 2, 3, 4, 5, 0, 1, 2),
                     slots=(0, 1, 2, 3, 4, 5, 8, 9, 10), seqs=(a, b))


def _decode() -> StepBatch:
    a = SeqSlice(start=0, length=1, context_len=7, block_table=(0, 1), temperature=0.0)
    b = SeqSlice(start=1, length=1, context_len=4, block_table=(2,), temperature=0.8, seed=3)
    return StepBatch(step=2, tokens=(60, 61), positions=(6, 3), slots=(6, 11), seqs=(a, b))


def _no_throttle(_: float) -> None:
    return None


def _run_tp(tp: int) -> list[torch.Tensor]:
    """Prefill then decode on ``tp`` shards, each in its own thread with its own gloo group; rank-0 logits."""
    store = dist.HashStore()
    shards = [ModelShard(CFG, r, tp, num_blocks=8, block_size=BLOCK) for r in range(tp)]
    out: dict[int, list[torch.Tensor]] = {}

    def run(rank: int) -> None:
        pg = dist.ProcessGroupGloo(dist.PrefixStore(f"tp{tp}", store), rank, tp, timedelta(seconds=30))

        def all_reduce(t: torch.Tensor) -> None:
            pg.allreduce([t]).wait()

        out[rank] = [shards[rank].forward(b, all_reduce, _no_throttle) for b in (_prefill(), _decode())]

    run_ranks(tp, run)
    assert all(o is None for r in range(1, tp) for o in out[r]), "only rank 0 returns logits"
    return out[0]


@pytest.mark.parametrize("tp", [2, 4])
def test_tp_logits_match_single_rank(tp: int) -> None:
    ref = _run_tp(1)
    got = _run_tp(tp)
    for r, g in zip(ref, got, strict=True):
        assert r.shape == (2, CFG.vocab)
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    # the logits are not trivially equal: different sequences give different rows
    assert (ref[0][0] - ref[0][1]).abs().max() > 1e-3


def test_paged_decode_equals_full_prefill() -> None:
    noop = lambda t: None  # noqa: E731
    paged = ModelShard(CFG, 0, 1, num_blocks=8, block_size=BLOCK)
    paged.forward(_prefill(), noop, _no_throttle)
    decoded = paged.forward(_decode(), noop, _no_throttle)
    full = ModelShard(CFG, 0, 1, num_blocks=8, block_size=BLOCK)
    a = SeqSlice(start=0, length=7, context_len=7, block_table=(0, 1))
    batch = StepBatch(step=1, tokens=(1, 40, 41, 42, 43, 44, 60), positions=tuple(range(7)),
                      slots=tuple(range(7)), seqs=(a,))
    prefilled = full.forward(batch, noop, _no_throttle)
    torch.testing.assert_close(decoded[0], prefilled[0], rtol=1e-4, atol=1e-5)


def test_weights_depend_on_seed() -> None:
    a = ModelShard(CFG, 0, 1, 1, BLOCK)
    b = ModelShard(ModelConfig(**{**CFG.__dict__, "seed": 8}), 0, 1, 1, BLOCK)
    assert not torch.equal(a.layers[0].wqkv, b.layers[0].wqkv)
    assert torch.equal(a.layers[0].wqkv, ModelShard(CFG, 0, 1, 1, BLOCK).layers[0].wqkv)


def test_sampling_is_greedy_at_zero_and_seeded_otherwise() -> None:
    logits = torch.randn(2, CFG.vocab, generator=torch.Generator().manual_seed(0))
    seqs = _prefill().seqs
    first = sample(logits, seqs, [6, 3])
    assert first[0] == int(torch.argmax(logits[0]))
    assert sample(logits, seqs, [6, 3]) == first  # same seed and position: same token
    draws = {sample(logits, seqs, [6, p])[1] for p in range(3, 40)}
    assert len(draws) > 5  # the position feeds the sampler's seed


def test_forward_matches_values_recorded_before_pipeline_stages() -> None:
    """The tensor-parallel-only forward is unchanged by pipeline support: logits recorded with the model of
    a1c7614 (before stages existed) on this file's CFG and batches."""
    noop = lambda t: None
    shard = ModelShard(CFG, 0, 1, num_blocks=8, block_size=BLOCK)
    prefill = shard.forward(_prefill(), noop, _no_throttle)
    decode = shard.forward(_decode(), noop, _no_throttle)
    recorded = {
        "prefill": ([[-0.07322251796722412, -0.06260117888450623, -0.16809381544589996],
                     [-0.2614710330963135, 0.44509103894233704, 0.1849437654018402]], [194, 240], -2.4346554279327393),
        "decode": ([[-0.1638406217098236, -0.21365268528461456, -0.14510858058929443],
                    [-0.27354151010513306, 0.26450279355049133, -0.6366350650787354]], [68, 38], -11.888110160827637),
    }
    for got, (head, argmax, total) in zip((prefill, decode), recorded.values(), strict=True):
        torch.testing.assert_close(got[:, :3], torch.tensor(head), rtol=1e-5, atol=1e-6)
        assert torch.argmax(got, -1).tolist() == argmax
        assert abs(float(got.sum()) - total) < 1e-3
    assert sample(prefill, _prefill().seqs, [6, 3]) == [194, 5]
