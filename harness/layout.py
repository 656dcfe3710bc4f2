"""Where each rank sits in a DP x PP x TP layout, and the names an operator sees for it: one place for the scenario
(chaosbench.scenario.TopologySpec.grid), the engines, the testbeds and the case's topology.json.

World of ``dp * pp * tp`` ranks; global rank ``r = (d * pp + p) * tp + t`` for replica d, pipeline stage p and
tensor-parallel index t. A replica's ranks are one contiguous block; inside it, stage p's ranks are contiguous.
Ranks go on nodes in contiguous blocks: ``node-(r * nodes // world_size)``.
Components: ``node-<i>``, ``rank-<r>``, ``replica-<d>``, ``replica-<d>.stage-<p>`` (no '_': RCAEval splits columns
at '_'). With dp = pp = 1 (``single_group``) there are no replica or stage components, and the engine runs its
tensor-parallel-only path: no new labels, names or trace metadata.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chaosbench.case import LayoutRecord

_COMPONENT = re.compile(r"^(?:(node|rank|replica)-(\d+)|replica-(\d+)\.stage-(\d+))$")


def replica_name(replica: int) -> str:
    return f"replica-{replica}"


def stage_name(replica: int, stage: int) -> str:
    return f"replica-{replica}.stage-{stage}"


def parse_component(name: str) -> tuple[str, tuple[int, ...]]:
    """``rank-3`` -> ("rank", (3,)), ``replica-1.stage-0`` -> ("stage", (1, 0)); ValueError otherwise."""
    m = _COMPONENT.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a component name (node-<i>, rank-<r>, replica-<d>, replica-<d>.stage-<p>)")
    if m.group(1):
        return m.group(1), (int(m.group(2)),)
    return "stage", (int(m.group(3)), int(m.group(4)))


@dataclass(frozen=True)
class RankCoord:
    replica: int
    stage: int
    tp_index: int

    @property
    def replica_name(self) -> str:
        return replica_name(self.replica)

    @property
    def stage_name(self) -> str:
        return stage_name(self.replica, self.stage)


@dataclass(frozen=True)
class Layout:
    dp: int = 1
    pp: int = 1
    tp: int = 1
    nodes: int = 1

    def __post_init__(self) -> None:
        if min(self.dp, self.pp, self.tp, self.nodes) < 1:
            raise ValueError(f"layout sizes must be positive, got {self}")

    @property
    def world_size(self) -> int:
        return self.dp * self.pp * self.tp

    @property
    def replica_size(self) -> int:
        """Ranks per replica (one torch.distributed world per replica)."""
        return self.pp * self.tp

    @property
    def single_group(self) -> bool:
        """One replica of one stage: the layout before replicas and stages (no replica or stage components)."""
        return self.dp == 1 and self.pp == 1

    def label(self) -> str:
        return f"{self.dp}x{self.pp}x{self.tp}"

    def rank(self, replica: int, stage: int, tp_index: int) -> int:
        if not (0 <= replica < self.dp and 0 <= stage < self.pp and 0 <= tp_index < self.tp):
            raise ValueError(f"no rank at replica {replica}, stage {stage}, tp {tp_index} in {self.label()}")
        return (replica * self.pp + stage) * self.tp + tp_index

    def coord(self, rank: int) -> RankCoord:
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} outside a world of {self.world_size}")
        block, tp_index = divmod(rank, self.tp)
        replica, stage = divmod(block, self.pp)
        return RankCoord(replica=replica, stage=stage, tp_index=tp_index)

    def local_rank(self, rank: int) -> int:
        """The rank's index in its replica's torch.distributed world."""
        return rank % self.replica_size

    def replica_ranks(self, replica: int) -> list[int]:
        first = replica * self.replica_size
        return list(range(first, first + self.replica_size))

    def stage_ranks(self, replica: int, stage: int) -> list[int]:
        first = self.rank(replica, stage, 0)
        return list(range(first, first + self.tp))

    def rank_node(self, rank: int) -> str:
        return f"node-{rank * self.nodes // self.world_size}"

    def stage_layers(self, stage: int, layers: int) -> range:
        """Decoder layers held by ``stage``: [stage * L / pp, (stage + 1) * L / pp)."""
        per = layers // self.pp
        return range(stage * per, (stage + 1) * per)

    def replica_names(self) -> list[str]:
        return [] if self.single_group else [replica_name(d) for d in range(self.dp)]

    def stage_names(self) -> list[str]:
        return [] if self.pp == 1 else [stage_name(d, p) for d in range(self.dp) for p in range(self.pp)]

    def ranks_of(self, component: str) -> list[int]:
        """The ranks a component holds: ``rank-<r>``, ``replica-<d>``, ``replica-<d>.stage-<p>`` or ``node-<i>``;
        ValueError for a name that is not a component of this layout."""
        kind, index = parse_component(component)
        if kind == "rank" and index[0] < self.world_size:
            return [index[0]]
        if kind == "replica" and index[0] < self.dp:
            return self.replica_ranks(index[0])
        if kind == "stage" and index[0] < self.dp and index[1] < self.pp:
            return self.stage_ranks(index[0], index[1])
        if kind == "node" and index[0] < self.nodes:
            return [r for r in range(self.world_size) if self.rank_node(r) == component]
        raise ValueError(f"no {component} in this topology (data_parallel {self.dp}, pipeline_parallel {self.pp}, "
                         f"tensor_parallel {self.tp}, {self.nodes} nodes)")

    def node_of(self, component: str) -> str | None:
        """The node holding every rank of ``component`` (a node is its own), None when its ranks span nodes."""
        if component.startswith("node-"):
            return component
        nodes = {self.rank_node(r) for r in self.ranks_of(component)}
        return nodes.pop() if len(nodes) == 1 else None

    def record(self) -> LayoutRecord:
        """The layout as topology.json records it: sizes and, per rank, its replica, stage, tp index and node."""
        ranks = {}
        for r in range(self.world_size):
            c = self.coord(r)
            ranks[f"rank-{r}"] = {"replica": c.replica, "stage": c.stage, "tp_index": c.tp_index,
                                  "node": self.rank_node(r)}
        return {"data_parallel": self.dp, "pipeline_parallel": self.pp, "tensor_parallel": self.tp, "ranks": ranks}
