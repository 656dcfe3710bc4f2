"""Resolving a fault step's target on a testbed, with preflight errors that say what is missing; and a rank-level
fault on a replica or a stage (``fan_out``).

``fan_out(module)`` wraps a fault whose primary target is a rank and which allows replica or stage targets in
``RankFanout``: a rank target goes straight to the module; a replica or stage target becomes one sub-step per rank
(``rank_steps``): preflight checks every rank, the handle holds one sub-handle per rank (``parts``, each with its
own key), inject and recover go over all of them, and the fault is verified once every rank shows its signal.
Recovery tries every part and reports all failures, so it stays idempotent and works from the journalled handle
alone. The local testbed's ``injector`` and the journal's replay use it.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Any

from chaosbench.backends.base import NodeInfo, RankInfo, Testbed
from chaosbench.errors import PreflightFailed
from chaosbench.faults.base import Evidence, Handle, Injector, base_handle

if TYPE_CHECKING:
    from chaosbench.faults.spec import FaultSpec
    from chaosbench.scenario import FaultStep


def node(testbed: Testbed, step: FaultStep) -> NodeInfo:
    name = step.target.node
    if name is None and step.target.rank is not None:
        return testbed.nodes[rank(testbed, step).node]
    if name not in testbed.nodes:
        raise PreflightFailed(f"{step.id}: target {name} not on this testbed (nodes: {', '.join(testbed.nodes)})")
    return testbed.nodes[name]


def rank(testbed: Testbed, step: FaultStep) -> RankInfo:
    name = f"rank-{step.target.rank}"
    if step.target.rank is None or name not in testbed.ranks:
        raise PreflightFailed(
            f"{step.id}: target {step.target.component} is not a rank of this testbed "
            f"(ranks: {', '.join(testbed.ranks)})"
        )
    return testbed.ranks[name]


def ranks(testbed: Testbed, step: FaultStep) -> list[RankInfo]:
    """The ranks a rank, replica or stage target holds on this testbed, by index."""
    t = step.target
    if t.rank is not None:
        return [rank(testbed, step)]
    found = sorted((r for r in testbed.ranks.values() if t.replica is not None and r.replica == t.replica
                    and (t.stage is None or r.stage == t.stage)), key=lambda r: r.index)
    if not found:
        raise PreflightFailed(f"{step.id}: target {t.component} holds no rank of this testbed "
                              f"(ranks: {', '.join(testbed.ranks)})")
    return found


def rank_steps(step: FaultStep, indexes: list[int]) -> list[FaultStep]:
    """The step once per rank: how a rank-level mechanism hits a replica or a stage."""
    from chaosbench.scenario import Target

    return [step.model_copy(update={"target": Target(rank=i)}) for i in indexes]


def rank_pid(testbed: Testbed, step: FaultStep) -> int:
    r = rank(testbed, step)
    try:
        pid = testbed.rank_pid(r.name)
    except Exception as exc:  # noqa: BLE001 - a backend may fail in many ways; preflight says which
        raise PreflightFailed(f"{step.id}: no pid for {r.name}: {exc}") from exc
    if not pid or not os.path.exists(f"/proc/{pid}"):
        raise PreflightFailed(f"{step.id}: {r.name} has no live process (pid {pid})")
    return pid


def need_root(fault_id: str) -> None:
    if os.geteuid() != 0:
        raise PreflightFailed(f"{fault_id}: needs root (cgroups, netns, qdiscs or iptables)")


def need_binaries(fault_id: str, *names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise PreflightFailed(f"{fault_id}: missing binaries: {', '.join(missing)} (apt-get install them)")


# ----------------------------------------------------------------------------- a replica or a stage, rank by rank


def fan_out(module: Injector) -> Injector:
    """``module``, or ``RankFanout(module)`` when it is a rank fault that also allows replicas or stages."""
    spec = module.SPEC
    return RankFanout(module) if spec.target == "rank" and len(spec.target_kinds) > 1 else module


class FanoutHandle(Handle):
    parts: list[dict[str, Any]]  # one handle of the fault module per rank of the target


class RankFanout:
    """A fault module applied to every rank of a replica or a stage (duck-types chaosbench.faults.base.Injector)."""

    def __init__(self, module: Injector):
        self.module = module
        self.SPEC: FaultSpec = module.SPEC

    def preflight(self, testbed: Testbed, step: FaultStep) -> None:
        if step.target.kind == "rank":
            return self.module.preflight(testbed, step)
        for sub in _rank_steps(testbed, step):
            self.module.preflight(testbed, sub)
        return None

    def prepare(self, testbed: Testbed, step: FaultStep, key: str) -> Handle:
        if step.target.kind == "rank":
            return self.module.prepare(testbed, step, key)
        parts = [dict(self.module.prepare(testbed, sub, f"{key}.{sub.target.component}"))
                 for sub in _rank_steps(testbed, step)]
        return FanoutHandle(**base_handle(self.SPEC, step, key), parts=parts)

    def inject(self, handle: Any, testbed: Testbed) -> Handle:
        if "parts" not in handle:
            return self.module.inject(handle, testbed)
        for i, part in enumerate(handle["parts"]):
            handle["parts"][i] = dict(self.module.inject(part, testbed))
        return handle

    def verify(self, handle: Any, testbed: Testbed) -> Evidence | None:
        """Evidence once every rank shows the signal: the first rank's signal and value, every rank's detail."""
        if "parts" not in handle:
            return self.module.verify(handle, testbed)
        seen = []
        for part in handle["parts"]:
            evidence = self.module.verify(part, testbed)
            if evidence is None:
                return None
            seen.append(evidence)
        times = [e.at for e in seen if e.at is not None]
        extra = {f"{part['component']}.{k}": v for part, e in zip(handle["parts"], seen) for k, v in e.extra.items()}
        return Evidence(seen[0].signal, seen[0].value, f"{handle['component']}: " + "; ".join(e.detail for e in seen),
                        extra, max(times) if len(times) == len(seen) else None)

    def recover(self, handle: Any) -> None:
        if "parts" not in handle:
            return self.module.recover(handle)
        errors = []
        for part in handle["parts"]:
            try:
                self.module.recover(part)
            except Exception as exc:  # noqa: BLE001 - recover every rank, report all
                errors.append(f"{part['component']}: {type(exc).__name__}: {exc}")
        if errors:
            raise RuntimeError("; ".join(errors))
        return None


def _rank_steps(testbed: Testbed, step: FaultStep) -> list[FaultStep]:
    return rank_steps(step, [r.index for r in ranks(testbed, step)])
