"""A fault defined outside chaosbench in one module, installed as a plugin (issue 16): ``rank-nice``.

Local (real): every thread of the rank's process runs at CPU nice ``params.nice``, so under CPU contention the
rank gets fewer cycles than its peers. Verify: the threads' nice values. Recover: the nice values they had.
Cluster: a Chaos Mesh CPU stressor on the rank's node (no per-process renice there).
Installed by an entry point of group ``chaosbench.faults``: ``rank-nice = tests.faults.plugin_fault``; it imports
from ``chaosbench`` only (the public face).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from chaosbench import Evidence, FaultSpec, Handle, ParamRange, Params, Sampling, Testbed, base_handle, between, targets

if TYPE_CHECKING:
    from chaosbench import ClusterKit, ClusterParts, FaultStep


class RankNiceParams(Params):
    nice: between(int, 1, 19, "CPU nice value of the rank's threads") = 19


SPEC = FaultSpec(
    id="rank-nice",
    fault_class="CPU",
    description="The rank's process runs at a low CPU priority: under contention it gets fewer cycles.",
    target="rank",
    params=RankNiceParams,
    cluster_mechanism="Chaos Mesh StressChaos cpu (1 worker) on the rank's node",
    local_mechanism="setpriority(nice) on every thread of the rank's process",
    local_realism="real",
    verify_signal="every thread of the rank's process at the nice value",
    recovery="the threads' previous nice values",
    seen_in=("traces", "metrics"),
    sampling=Sampling({"nice": ParamRange(5, 19, 1)}),
    key_metrics=("cpu",),
    needs_root="restoring the rank's CPU priority (lowering a nice value)",
)


class RankNiceHandle(Handle):
    pid: int
    nice: int
    previous: dict[str, int]  # thread id -> nice before the fault


def _threads(pid: int) -> list[int]:
    try:
        return [int(p.name) for p in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return []


def _nice_of(tids: list[int]) -> dict[str, int]:
    out = {}
    for tid in tids:
        try:
            out[str(tid)] = os.getpriority(os.PRIO_PROCESS, tid)
        except ProcessLookupError:
            pass  # the thread ended meanwhile
    return out


def _renice(tids: list[int], value: dict[str, int] | int) -> None:
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, value if isinstance(value, int) else value[str(tid)])
        except ProcessLookupError:
            pass


def preflight(testbed: Testbed, step: FaultStep) -> None:
    targets.rank_pid(testbed, step)


def prepare(testbed: Testbed, step: FaultStep, key: str) -> RankNiceHandle:
    pid = targets.rank_pid(testbed, step)
    return RankNiceHandle(**base_handle(SPEC, step, key), pid=pid, nice=step.params.nice,
                          previous=_nice_of(_threads(pid)))


def inject(handle: RankNiceHandle, testbed: Testbed) -> RankNiceHandle:
    _renice(_threads(handle["pid"]), handle["nice"])
    return handle


def verify(handle: RankNiceHandle, testbed: Testbed) -> Evidence | None:
    seen = _nice_of(_threads(handle["pid"]))
    if not seen or any(v != handle["nice"] for v in seen.values()):
        return None
    return Evidence("nice", float(handle["nice"]),
                    f"{handle['component']}: {len(seen)} threads of pid {handle['pid']} at nice {handle['nice']}")


def recover(handle: RankNiceHandle) -> None:
    # threads started during the fault inherited its nice value: they get the process's previous one
    before = handle["previous"].get(str(handle["pid"]), 0)
    tids = _threads(handle["pid"])
    _renice(tids, {str(t): handle["previous"].get(str(t), before) for t in tids})


def cluster(step: FaultStep, kit: ClusterKit) -> ClusterParts:
    obj = kit.chaos("StressChaos", {**kit.on_node(step.duration), "stressors": {"cpu": {"workers": 1, "load": 100}}})
    return {"chaos_objects": (obj,), "notes": ("a CPU stressor on the rank's node stands in for the renice",),
            "evidence_query": f"sum(rate(container_cpu_usage_seconds_total{{{kit.pods}}}[{kit.rate_window(True)}]))"}
