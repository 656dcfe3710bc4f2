"""What a fault declares about itself: ``FaultSpec``, its parameter model base and its campaign sampling.

Every fault module (``harness/faults/<id with _>.py`` or a plugin) defines ``SPEC = FaultSpec(...)``; the rest of
chaosbench reads these fields instead of naming fault ids: the scenario schema (``params``, ``target``), campaigns
(``sampling``), the local preflight (``needs_root``), engines (``local_needs``), the k8s settings
(``cluster_engine_kwargs``), evaluation (``key_metrics``) and ``chaosbench faults`` (all of it).
Importing this module is cheap (pydantic only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

FaultClass = Literal["GPU", "NCCL", "CPU", "memory", "network"]
# What a fault step may target (chaosbench.scenario.Target): a node, a rank (one GPU), a replica (every rank of one
# data-parallel replica) or a stage (every rank of one pipeline stage of one replica).
TargetKind = Literal["node", "rank", "replica", "stage"]
Realism = Literal["real", "emulated"]
Signal = Literal["traces", "metrics", "logs"]
# What a local mechanism needs from the engine beyond processes: its emulated device layer (control file), or a
# link between nodes that carries the collective traffic. An engine lists the ones it lacks (engines/vllm).
LocalNeed = Literal["device-layer", "inter-node-link"]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


@dataclass(frozen=True)
class ParamRange:
    """A sampled number: uniform position u in [0, 1] from ``mild`` (u=0) to ``severe`` (u=1), on a log scale
    when ``log``; rounded to ``step`` (an int step gives an int). ``weight`` is its share of the intensity."""

    mild: float
    severe: float
    step: float
    log: bool = False
    weight: float = 1.0

    def value(self, u: float) -> float | int:
        lo, hi = self.mild, self.severe
        if self.log:
            raw = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        else:
            raw = lo + u * (hi - lo)
        v = min(max(round(raw / self.step) * self.step, min(lo, hi)), max(lo, hi))
        return round(v) if isinstance(self.step, int) else round(v, 6)

    def position(self, v: float) -> float:
        f = math.log if self.log else float
        return min(max((f(v) - f(self.mild)) / (f(self.severe) - f(self.mild)), 0.0), 1.0)


@dataclass(frozen=True)
class Sampling:
    """What a campaign (harness/campaign.py) may draw for a fault: a range per sampled parameter, from barely
    visible (position 0) to severe (position 1). Parameters not named keep the model's default. A fault without
    a graded parameter (a hung rank, a failed worker) is an outage: intensity 1."""

    ranges: dict[str, ParamRange] = field(default_factory=dict)
    choices: dict[str, tuple] = field(default_factory=dict)  # categorical parameters, drawn uniformly

    def intensity(self, params: dict) -> float:
        """0 (barely visible) .. 1 (severe): the weighted mean position of the sampled values."""
        graded = [(r.weight, r.position(params[k])) for k, r in self.ranges.items() if r.weight and k in params]
        if not graded:
            return 1.0
        return round(sum(w * p for w, p in graded) / sum(w for w, _ in graded), 4)


@dataclass(frozen=True, eq=False)  # one instance per fault: compared (and hashed) by identity
class FaultSpec:
    id: str
    fault_class: FaultClass
    description: str
    target: TargetKind  # the primary kind: what the fault hits on a single tensor-parallel group
    params: type[Params]
    cluster_mechanism: str
    local_mechanism: str
    local_realism: Realism
    verify_signal: str
    recovery: str
    seen_in: tuple[Signal, ...]
    sampling: Sampling = Sampling()
    # substrings (lower case) of the metric names that show the fault: metric-level scoring (eval/outcomes.py)
    key_metrics: tuple[str, ...] = ()
    needs_root: str | None = None  # why the local mechanism needs root (namespaces, cgroups, qdiscs, iptables)
    local_needs: tuple[LocalNeed, ...] = ()
    # engine arguments the k8s backend sets (unless the scenario does) when a scenario holds this fault
    cluster_engine_kwargs: dict[str, object] = field(default_factory=dict)
    version: int = 1
    # every kind a step may target, the primary one first (empty: the primary only). A rank-level mechanism on a
    # replica or a stage hits each of its ranks (chaosbench.faults.targets.ranks)
    targets: tuple[TargetKind, ...] = ()

    def __post_init__(self) -> None:
        if self.targets and self.targets[0] != self.target:
            raise ValueError(f"{self.id}: targets must start with the primary target kind {self.target!r}")

    @property
    def target_kinds(self) -> tuple[TargetKind, ...]:
        return self.targets or (self.target,)
