"""One pipeline stage's part of an engine step: micro-batches flow from stage to stage, point to point.

Every rank of a replica gets the step's batch from the driver. The batch is cut into micro-batches of whole
sequences (model.split_batch); for each, a stage receives the previous stage's hidden states (the first stage
embeds the tokens), runs its layers (tensor-parallel inside the stage as without stages) and posts a
non-blocking send to the same tp index of the next stage, then goes on to the next micro-batch: stages overlap
(GPipe's forward fill and drain). The last stage's tp-0 rank samples each micro-batch and returns the step's
tokens. Trace ranges: ``pp.recv`` (waiting for the activation), ``pp.send`` (posting it) and ``pp.send.wait``
(draining the sends at the end of the step), next to the compute and ``allreduce`` ranges.

The links are plain callables, so the stage runs the same over torch.distributed (worker.py) and over
process-group objects in one process (the tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch.profiler import record_function

from chaosbench.engines.mini.model import AllReduce, ModelShard, StepBatch, Throttle, sample, split_batch


class Work(Protocol):
    def wait(self) -> object: ...


P2p = Callable[[torch.Tensor, int], Work]  # (tensor, tag) -> in-flight work


def _nothing() -> None:
    return None


def _ignore(_: float) -> None:
    return None


@dataclass(frozen=True)
class StageLinks:
    """A rank's links: ``all_reduce`` over its stage's tensor-parallel group, ``send``/``recv`` to the same tp
    index of the next/previous stage (None at the ends). ``before_p2p`` runs before each send and receive
    reaches the transport (the device's collective_hang); ``p2p_seconds`` observes each blocking wait."""

    all_reduce: AllReduce
    send: P2p | None = None
    recv: P2p | None = None
    before_p2p: Callable[[], None] = _nothing
    p2p_seconds: Callable[[float], None] = _ignore


def run_stage(shard: ModelShard, batch: StepBatch, links: StageLinks, throttle: Throttle,
              micro_batches: int) -> list[int] | None:
    """Run this rank's stage over the step's micro-batches; the last stage's tp-0 rank returns the tokens."""
    sends: list[Work] = []
    tokens: list[int] | None = [] if shard.last_stage and shard.lm_head is not None else None
    for tag, mb in enumerate(split_batch(batch, micro_batches)):
        hidden = None
        if links.recv is not None:
            hidden = torch.empty(len(mb.tokens), shard.cfg.hidden)
            with record_function("pp.recv"):
                t0 = time.perf_counter()
                links.before_p2p()
                links.recv(hidden, tag).wait()
                links.p2p_seconds(time.perf_counter() - t0)
        out = shard.forward_stage(mb, hidden, links.all_reduce, throttle)
        if links.send is not None:
            assert out is not None  # an inner stage always hands on its hidden states
            with record_function("pp.send"):
                links.before_p2p()
                sends.append(links.send(out, tag))
        elif tokens is not None and out is not None:
            tokens += sample(out, mb.seqs, [s.context_len for s in mb.seqs])
    if sends:
        with record_function("pp.send.wait"):
            t0 = time.perf_counter()
            for work in sends:
                work.wait()
            links.p2p_seconds(time.perf_counter() - t0)
    return tokens
