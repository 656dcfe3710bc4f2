"""The mini engine's configuration, built from a scenario's deployment section."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaosbench.errors import InputInvalid
from chaosbench.layout import Layout

MAX_LOCAL_RANKS = 8  # what the local testbed's emulated nodes can hold


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mini-llama"
    layers: int = 2
    hidden: int = 256
    heads: int = 4
    vocab: int = 2048
    max_seq_len: int = 512
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def intermediate(self) -> int:
        return 2 * self.hidden


@dataclass(frozen=True)
class EngineConfig:
    model: ModelConfig
    tensor_parallel: int = 4
    nodes: int = 1
    block_size: int = 16  # tokens per KV block
    kv_blocks: int = 64  # KV blocks per rank (small on purpose: memory pressure must cause preemptions)
    max_num_seqs: int = 16
    max_batched_tokens: int = 1024
    trace_dir: str = ""
    control_dir: str = ""
    run_dir: str = ""
    node_ips: dict[str, str] = field(default_factory=dict)
    gloo_ifname: str | None = None
    metrics_port: int = 0  # 0: an ephemeral port, kept across rank restarts
    trace_ops: bool = False  # traces hold the role ranges only; True adds every aten:: op (costlier)
    gloo_timeout_s: float = 1800.0  # longer than any collective_hang window: peers must block, not fail
    data_parallel: int = 1  # replicas, each its own pipeline_parallel x tensor_parallel ranks
    pipeline_parallel: int = 1  # stages per replica
    micro_batches: int = 0  # per step with pipeline stages; 0: one per stage

    @property
    def layout(self) -> Layout:
        return Layout(dp=self.data_parallel, pp=self.pipeline_parallel, tp=self.tensor_parallel, nodes=self.nodes)

    def rank_node(self, rank: int) -> str:
        return self.layout.rank_node(rank)

    def node_ip(self, node: str) -> str | None:
        return self.node_ips.get(node)


def engine_config(scenario: Any, *, run_dir: Path, trace_dir: Path, control_dir: Path,
                  node_ips: dict[str, str], gloo_ifname: str | None, **overrides: Any) -> EngineConfig:
    """Build the engine config from ``scenario.spec.deployment`` (a Scenario or any look-alike)."""
    dep = scenario.spec.deployment
    topo, m = dep.topology, dep.model
    tp = int(topo.tensor_parallel)
    dp = int(getattr(topo, "data_parallel", 1))
    pp = int(getattr(topo, "pipeline_parallel", 1))  # TopologySpec gains it with issue 17; 1 until then
    _check_layout(dp, pp, tp, m)
    if m.vocab < 260:
        raise InputInvalid(f"model.vocab must be at least 260 for the byte tokenizer, got {m.vocab}")
    seed = int(getattr(getattr(scenario.spec, "workload", None), "seed", 0) or 0)
    model = ModelConfig(name=m.name, layers=m.layers, hidden=m.hidden, heads=m.heads, vocab=m.vocab,
                        max_seq_len=m.max_seq_len, seed=seed)
    return EngineConfig(model=model, tensor_parallel=tp, nodes=int(topo.nodes), trace_dir=str(trace_dir),
                        control_dir=str(control_dir), run_dir=str(run_dir), node_ips=dict(node_ips),
                        gloo_ifname=gloo_ifname, data_parallel=dp, pipeline_parallel=pp, **overrides)


def _check_layout(dp: int, pp: int, tp: int, m: Any) -> None:
    """One-line InputInvalid for a layout the mini engine cannot run."""
    if min(dp, pp, tp) < 1:
        raise InputInvalid(f"data_parallel={dp}, pipeline_parallel={pp}, tensor_parallel={tp}: each must be >= 1")
    if dp * pp * tp > MAX_LOCAL_RANKS:
        raise InputInvalid(f"layout {dp}x{pp}x{tp} (data x pipeline x tensor parallel) needs {dp * pp * tp} ranks; "
                           f"the mini engine runs at most {MAX_LOCAL_RANKS} on the local testbed")
    if m.heads % tp or m.hidden % m.heads or (2 * m.hidden) % tp:
        raise InputInvalid(f"model heads={m.heads}, hidden={m.hidden} cannot be split over tensor_parallel={tp}")
    if m.layers % pp:
        raise InputInvalid(f"model layers={m.layers} cannot be split over pipeline_parallel={pp} "
                           f"(each stage holds layers/{pp} layers)")
