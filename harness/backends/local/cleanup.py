"""Undo a local testbed from its plan alone: processes, namespaces, bridge, cgroups.

Used after the teardown playbook (to verify it and to catch what it missed) and
by ``chaosbench cleanup`` after a crash. Idempotent. It only signals processes
this testbed started: PIDs from its pid files whose command line names the run,
and every process inside its cgroups or network namespaces.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from chaosbench.backends.local.plan import TestbedPlan


@dataclass(frozen=True)
class Leftovers:
    pids: tuple[int, ...]
    netns: tuple[str, ...]
    links: tuple[str, ...]
    cgroups: tuple[str, ...]

    def empty(self) -> bool:
        return not (self.pids or self.netns or self.links or self.cgroups)

    def describe(self) -> str:
        parts = [f"{label}: {', '.join(map(str, items))}" for label, items in
                 (("processes", self.pids), ("namespaces", self.netns), ("links", self.links),
                  ("cgroups", self.cgroups)) if items]
        return "; ".join(parts) or "nothing"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pidfile_pids(plan: TestbedPlan) -> set[int]:
    out: set[int] = set()
    if not plan.pid_dir.is_dir():
        return out
    for f in plan.pid_dir.glob("*.pid"):
        try:
            pid = int(f.read_text().split()[0])
        except (ValueError, IndexError, OSError):
            continue
        cmd = _cmdline(pid)
        if plan.run_id in cmd or plan.run_dir in cmd:  # guards against a reused PID
            out.add(pid)
    return out


def cgroup_pids(cgroup_dir: str) -> set[int]:
    out: set[int] = set()
    root = Path(cgroup_dir)
    if not root.is_dir():
        return out
    for procs in root.rglob("cgroup.procs"):
        try:
            out.update(int(x) for x in procs.read_text().split())
        except OSError:
            continue
    return out


def netns_pids(netns: str) -> set[int]:
    res = _ip("netns", "pids", netns)
    return {int(x) for x in res.stdout.split()} if res.returncode == 0 else set()


def _tmp_pids(plan: TestbedPlan) -> set[int]:
    """Ray processes name their run's temp dir (unique per run) on the command line."""
    out: set[int] = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and plan.ray_tmp_root + "/" in _cmdline(int(d.name)):
            out.add(int(d.name))
    return out


def testbed_pids(plan: TestbedPlan) -> set[int]:
    pids = _pidfile_pids(plan) | _tmp_pids(plan)
    for node in (*plan.nodes, *([plan.driver] if plan.driver else [])):
        for d in node.cgroups.values():
            pids |= cgroup_pids(d)
        if node.netns:
            pids |= netns_pids(node.netns)
    pids.discard(os.getpid())
    return {p for p in pids if _alive(p)}


def kill_all(plan: TestbedPlan, grace_s: float = 8.0) -> None:
    """SIGTERM (SIGCONT first, for stopped ranks), then SIGKILL what is left after ``grace_s``."""
    pids = testbed_pids(plan)
    for sig in (signal.SIGCONT, signal.SIGTERM):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and (pids := testbed_pids(plan)):
        time.sleep(0.2)
    for _ in range(3):
        pids = testbed_pids(plan)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def _remove_cgroup_tree(root: Path, timeout_s: float = 5.0) -> None:
    """rmdir leaves first; retried, since a cgroup stays busy until its last (exiting) task is reaped."""
    deadline = time.monotonic() + timeout_s
    while root.is_dir():
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            root.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.2)


def remove_network(plan: TestbedPlan) -> None:
    for node in plan.nodes:
        if node.netns:
            _ip("netns", "del", node.netns)
        if node.veth_host:
            _ip("link", "del", node.veth_host)
    if plan.bridge:
        _ip("link", "del", plan.bridge)


def leftovers(plan: TestbedPlan) -> Leftovers:
    existing_ns = set(_ip("netns", "list").stdout.split())
    links = _ip("-o", "link", "show").stdout
    names = [n for node in plan.nodes for n in (node.veth_host,) if n] + ([plan.bridge] if plan.bridge else [])
    return Leftovers(
        pids=tuple(sorted(testbed_pids(plan))),
        netns=tuple(n.netns for n in plan.nodes if n.netns and n.netns in existing_ns),
        links=tuple(n for n in names if f": {n}:" in links or f": {n}@" in links),
        cgroups=tuple(d for d in plan.cgroup_run_dirs if Path(d).exists()),
    )


def cleanup(plan: TestbedPlan, grace_s: float = 8.0) -> Leftovers:
    """Stop everything and remove every resource of the plan; return what could not be removed."""
    kill_all(plan, grace_s)
    remove_network(plan)
    for d in plan.cgroup_run_dirs:
        _remove_cgroup_tree(Path(d))
    for d in plan.cgroup_run_dirs:  # remove the shared chaosbench/ parent once no run uses it
        try:
            Path(d).parent.rmdir()
        except OSError:
            pass
    shutil.rmtree(plan.ray_tmp_root, ignore_errors=True)
    return leftovers(plan)
