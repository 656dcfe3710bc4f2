"""What a case's faults could have left on a reused local testbed: the first half of the recovery gate.

Every fault of the local backend leaves a trace of its own kind while it is active: a marked process
(stressors, hogs, the NFQUEUE delayer), an iptables rule tagged ``chaosbench:<key>``, a root qdisc on a node
link, a CPU quota or memory limit on a node's cgroup, a stopped process, a non-default device control file.
``fault_residue`` looks for each of them (keys start with the case id, see chaosbench.faults.lifecycle.make_key)
and names what it found; an empty list means the rollback held.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from chaosbench.backends.local.cleanup import testbed_pids
from chaosbench.backends.local.plan import TestbedPlan
from chaosbench.faults.mech import cgroups, procs, tc
from chaosbench.faults.mech.netns import run as run_in

SHAPING_QDISCS = ("tbf", "htb", "netem", "hfsc", "prio")


def _marked_processes(key_prefix: str) -> list[str]:
    needle = f"{procs.MARKER_ENV}={key_prefix}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            env = Path(entry.path, "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(needle) for e in env) and procs.state(int(entry.name)) not in (None, "Z"):
            found.append(f"fault process {entry.name} still running")
    return found


def _iptables_rules(netns: str | None, key_prefix: str) -> list[str]:
    out = run_in(["iptables-save"], netns, check=False).stdout
    tag = f"chaosbench:{key_prefix}"
    return [f"iptables rule left{' in ' + netns if netns else ''}: {line.strip()[:120]}"
            for line in out.splitlines() if tag in line]


def _qdiscs(plan: TestbedPlan) -> list[str]:
    found = []
    for node in plan.nodes:
        for dev, ns in ((node.veth_node, node.netns), (node.veth_host, None)):
            if not dev:
                continue
            q = tc.root_qdisc(dev, ns)
            if q is not None and q.kind in SHAPING_QDISCS:
                found.append(f"{q.kind} qdisc left on {dev}{' in ' + ns if ns else ''}")
    return found


def _cgroup_limits(plan: TestbedPlan) -> list[str]:
    found = []
    for node in plan.nodes:
        for controller, d in node.cgroups.items():
            path = Path(d)
            if not path.is_dir():
                continue
            if controller in ("cpu", "unified") and cgroups.cpu_quota_file(path).is_file():
                quota = cgroups.read(cgroups.cpu_quota_file(path)).split()[0]
                if quota not in ("-1", "max"):
                    found.append(f"CPU quota {quota} left on {node.name}'s cgroup")
            if controller in ("memory", "unified") and cgroups.memory_limit_file(path).is_file():
                if cgroups.memory_limit(path) is not None:
                    found.append(f"memory limit left on {node.name}'s cgroup")
    return found


def _stopped(plan: TestbedPlan) -> list[str]:
    return [f"process {pid} is stopped" for pid in sorted(testbed_pids(plan)) if procs.state(pid) == "T"]


def _device_controls(control_dir: Path) -> list[str]:
    if not control_dir.is_dir():
        return []
    found = []
    for f in sorted(control_dir.glob("*.json")):
        try:
            fields = set(json.loads(f.read_text() or "{}")) - {"seq"}
        except json.JSONDecodeError:
            fields = {"unreadable"}
        if fields:
            found.append(f"device control of {f.stem} still sets {', '.join(sorted(fields))}")
    return found


def fault_residue(plan: TestbedPlan, control_dir: Path, case_id: str) -> list[str]:
    """Everything the faults of case ``case_id`` left behind on the testbed (empty: clean)."""
    prefix = f"{case_id}."
    found = _marked_processes(prefix) + _stopped(plan) + _qdiscs(plan) + _cgroup_limits(plan)
    for ns in [None, *(n.netns for n in plan.nodes if n.netns)]:
        found += _iptables_rules(ns, prefix)
    return found + _device_controls(control_dir)
