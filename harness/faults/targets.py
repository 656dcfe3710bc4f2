"""Resolving a fault step's target on a testbed, with preflight errors that say what is missing."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

from harness.backends.base import NodeInfo, RankInfo, Testbed
from harness.errors import PreflightFailed

if TYPE_CHECKING:
    from harness.scenario import FaultStep


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
