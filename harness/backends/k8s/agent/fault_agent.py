#!/usr/bin/env python3
"""chaosbench fault agent: GPU, NCCL and CPU mechanisms on one GPU node (runs in the privileged DaemonSet).

Standalone on purpose (stdlib only; torch only inside the hog processes): it is
shipped into the pod through a ConfigMap and run as
``python3 /opt/agent/fault_agent.py <command> [options]`` by the harness through
the Kubernetes exec API. Every command prints one JSON object on stdout and exits
0, or prints ``{"error": ...}`` and exits 1.

Commands mirror the local injectors' interface: ``inject <mechanism> ...``,
``verify <mechanism> ...``, ``recover <mechanism> ...`` and ``status``; the agent knows
mechanisms (``MECHANISMS``: power-cap, clock-lock, hogs, ...), not faults: each fault module's
cluster action names the mechanism it uses; ``locate --run NAME``
reports the run's vLLM worker processes (environment ``CHAOSBENCH_RAYSERVICE=NAME``)
with the GPU NVML puts each on, and whether the run's engine (the Serve LLM replica)
runs on this node. ``--gpu`` is an NVML UUID or index (nvidia-smi -i accepts both) or
``worker[:k]``: the k-th GPU (PCI bus order) that holds one of the run's workers. What
an inject changed is kept in a state file (hostPath), so ``recover`` works after an
agent restart and is idempotent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = Path(os.environ.get("CHAOSBENCH_AGENT_STATE", "/run/chaosbench-agent"))
NVSMI = os.environ.get("CHAOSBENCH_NVIDIA_SMI", "nvidia-smi")
KMSG = Path(os.environ.get("CHAOSBENCH_KMSG", "/dev/kmsg"))
CGROUP_ROOT = Path(os.environ.get("CHAOSBENCH_CGROUP_ROOT", "/host/sys/fs/cgroup"))
RUN_ENV = "CHAOSBENCH_RAYSERVICE"
ENGINE_TITLES = ("LLMServer", "LLMDeployment")  # Serve LLM's engine deployment (ray::ServeReplica:<app>:<name>)
MEM_HEADROOM_MIB = 256  # left free next to the memory hog so the driver itself is not starved


class AgentError(Exception):
    pass


# ----------------------------------------------------------------------------- helpers


def nvsmi(*args: str) -> str:
    try:
        out = subprocess.run([NVSMI, *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise AgentError(f"{NVSMI} not found: the agent needs the NVIDIA container toolkit") from exc
    if out.returncode != 0:
        raise AgentError(f"nvidia-smi {' '.join(args)}: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def query_gpu(gpu: str, fields: list[str]) -> dict[str, str]:
    line = nvsmi("-i", gpu, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits").strip()
    return dict(zip(fields, (v.strip() for v in line.split(",")), strict=True))


def gpus() -> list[dict[str, str]]:
    out = nvsmi("--query-gpu=index,uuid,pci.bus_id", "--format=csv,noheader,nounits")
    return [dict(zip(("index", "uuid", "bus_id"), (v.strip() for v in line.split(",")), strict=True))
            for line in out.splitlines() if line.strip()]


def compute_apps() -> list[tuple[int, str]]:
    """(host PID, GPU UUID) of every compute process (host PIDs: the pod runs with hostPID)."""
    out = nvsmi("--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader,nounits")
    apps = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            apps.append((int(parts[0]), parts[1]))
    return apps


def proc_env(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _hogs() -> set[int]:
    return {pid for state in _all_states() for pid in state.get("hog_pids", [])}


def run_workers(run: str) -> list[dict]:
    """The run's vLLM workers on this node: one per GPU, in PCI bus order (vLLM's local rank order)."""
    by_uuid = {g["uuid"]: g for g in gpus()}
    hogs, out = _hogs(), []
    for pid, uuid in compute_apps():
        if pid in hogs or uuid not in by_uuid or proc_env(pid).get(RUN_ENV) != run:
            continue
        out.append({"pid": pid, "uuid": uuid, "index": int(by_uuid[uuid]["index"]), "bus_id": by_uuid[uuid]["bus_id"]})
    return sorted(out, key=lambda w: (w["bus_id"].lower(), w["index"]))


def resolve_gpu(spec: str, run: str) -> dict[str, str]:
    """index, uuid and bus_id of the GPU ``spec`` names (UUID, index, or ``worker[:k]``)."""
    if spec.startswith("{"):
        raise AgentError(f"{spec} is the dry run's placeholder: deploy first (it writes the GPUs the cluster "
                         "reports into faults/plan.json)")
    if spec.startswith("worker"):
        k = int(spec.partition(":")[2] or 0)
        workers = run_workers(run)
        if k >= len(workers):
            raise AgentError(f"{spec}: this node has {len(workers)} GPU(s) with a worker of run {run!r}")
        spec = workers[k]["uuid"]
    for g in gpus():
        if spec in (g["uuid"], g["index"]):
            return g
    raise AgentError(f"no GPU {spec} on this node")


def worker_pid(uuid: str, run: str) -> int:
    """The run's inference worker on the GPU: a compute process of the run that is not one of our hogs."""
    hogs = _hogs()
    pids = [p for p, u in compute_apps() if u == uuid and p not in hogs and (not run or proc_env(p).get(RUN_ENV) == run)]
    if not pids:
        raise AgentError(f"no vLLM worker process of run {run!r} on GPU {uuid}")
    return pids[0]


def engines_here(run: str) -> int:
    """How many of the run's Serve LLM engine replicas run on this node (by process title and environment)."""
    count = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ServeReplica" in title and any(t in title for t in ENGINE_TITLES) \
                and proc_env(int(proc.name)).get(RUN_ENV) == run:
            count += 1
    return count


def gpu_pids(gpu: str) -> list[int]:
    return [p for p, u in compute_apps() if u == gpu]


def proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def cpu_cgroup(pid: int) -> tuple[str, Path]:
    """(version, directory) of the CPU cgroup holding ``pid``: v2 unified or v1 cpu controller."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(",") and (CGROUP_ROOT / controllers).is_dir():
            return "v1", CGROUP_ROOT / controllers / path.lstrip("/")
    for line in lines:
        if line.startswith("0::"):
            return "v2", CGROUP_ROOT / line[3:].lstrip("/")
    raise AgentError(f"no CPU cgroup found for pid {pid}")


def read_quota(version: str, cg: Path) -> str:
    if version == "v2":
        return (cg / "cpu.max").read_text().strip()
    return f"{(cg / 'cpu.cfs_quota_us').read_text().strip()} {(cg / 'cpu.cfs_period_us').read_text().strip()}"


def write_quota(version: str, cg: Path, quota: str, period: str) -> None:
    if version == "v2":
        (cg / "cpu.max").write_text(f"{quota} {period}\n")
    else:
        (cg / "cpu.cfs_period_us").write_text(f"{period}\n")
        (cg / "cpu.cfs_quota_us").write_text(f"{-1 if quota == 'max' else quota}\n")


def throttled_periods(cg: Path) -> int:
    for line in (cg / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "nr_throttled":
            return int(value)
    return 0


def _state_file(mechanism: str, gpu: str) -> Path:
    return STATE_DIR / f"{mechanism}.gpu{gpu}.json"


def save_state(mechanism: str, gpu: str, state: dict) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = _state_file(mechanism, gpu).with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(_state_file(mechanism, gpu))


def load_state(mechanism: str, gpu: str) -> dict | None:
    try:
        return json.loads(_state_file(mechanism, gpu).read_text())
    except FileNotFoundError:
        return None


def _all_states() -> list[dict]:
    if not STATE_DIR.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(STATE_DIR.glob("*.json"))]


def spawn_hog(kind: str, devices: list[str], args: list[str]) -> int:
    """Start a detached hog process (this file, hidden subcommand) on ``devices`` (NVML UUIDs, seen by the hog
    as cuda:0, cuda:1, ...) and return its PID."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(devices)}
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), f"_{kind}", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env=env,
    )
    return proc.pid


def kill_pids(pids: list[int]) -> list[int]:
    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


def alive(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state != "Z"


# ----------------------------------------------------------------------------- mechanisms
# Each mechanism acts on one GPU g (index, uuid, bus_id) with the command's options a; inject returns the state
# that verify and recover read back (hog_pids are killed on recover whatever the mechanism).


def _power_cap(g: dict, a: argparse.Namespace) -> dict:
    """Clamp the requested cap to the board's range (nvidia-smi refuses values outside it); refuse a cap that
    would not lower the current limit."""
    uuid, watts = g["uuid"], a.watts
    q = query_gpu(uuid, ["power.limit", "power.default_limit", "power.min_limit", "power.max_limit"])
    low, high, now = float(q["power.min_limit"]), float(q["power.max_limit"]), float(q["power.limit"])
    applied = int(min(max(watts, low), high))
    if applied >= now - 1:
        raise AgentError(f"power cap {watts} W refused: the board accepts {low:g}-{high:g} W and its limit is "
                         f"already {now:g} W, so the cap would not lower it")
    nvsmi("-i", uuid, "-pl", str(applied))
    return {"default_watts": float(q["power.default_limit"]), "watts": applied, "requested_watts": watts,
            "board_min_watts": low, "board_max_watts": high}


def _power_cap_verify(gpu: str, state: dict) -> dict:
    got = float(query_gpu(gpu, ["power.limit"])["power.limit"])
    return {"verified": abs(got - state["watts"]) <= 1.0, "power_limit_w": got,
            "requested_watts": state["requested_watts"]}


def _power_cap_recover(gpu: str, state: dict) -> dict:
    nvsmi("-i", gpu, "-pl", str(int(state["default_watts"])))
    return {"power_limit_w": state["default_watts"]}


def _clock_lock(g: dict, a: argparse.Namespace) -> dict:
    nvsmi("-i", g["uuid"], "-lgc", f"{a.mhz},{a.mhz}")
    return {"mhz": a.mhz}


def _clock_lock_verify(gpu: str, state: dict) -> dict:
    got = float(query_gpu(gpu, ["clocks.sm"])["clocks.sm"])
    return {"verified": got <= state["mhz"] * 1.05, "sm_clock_mhz": got}


def _clock_lock_recover(gpu: str, state: dict) -> dict:
    nvsmi("-i", gpu, "-rgc")
    return {"clocks": "reset"}


def _gemm_hog(g: dict, a: argparse.Namespace) -> dict:
    until = str(time.time() + a.duration)
    return {"hog_pids": [spawn_hog("gemm", [g["uuid"]], [str(a.size), until]) for _ in range(a.workers)]}


def _memory_hog(g: dict, a: argparse.Namespace) -> dict:
    free = float(query_gpu(g["uuid"], ["memory.free"])["memory.free"])
    mib = int((free - MEM_HEADROOM_MIB) * a.fraction)
    if mib < 64:
        raise AgentError(f"GPU {g['uuid']} has {free:g} MiB free: nothing for the memory hog to take (lower the "
                         "engine's gpu_memory_utilization)")
    until = str(time.time() + a.duration)
    return {"hog_pids": [spawn_hog("mem", [g["uuid"]], [str(mib), a.mode, str(a.duration), until])],
            "mib": mib, "free_mib_before": free}


def _memory_hog_verify(gpu: str, state: dict) -> dict:
    running = [p for p in state["hog_pids"] if alive(p)]
    free = float(query_gpu(gpu, ["memory.free"])["memory.free"])
    taken = state["free_mib_before"] - free
    return {"verified": bool(running) and taken >= 0.5 * state["mib"], "hog_pids_running": running,
            "taken_mib": taken}


def _link_hog(g: dict, a: argparse.Namespace) -> dict:
    peer = resolve_gpu(a.peer, a.run)
    until = str(time.time() + a.duration)
    return {"hog_pids": [spawn_hog("link", [g["uuid"], peer["uuid"]], [a.link, until]) for _ in range(a.workers)]}


def _hogs_verify(gpu: str, state: dict) -> dict:
    running = [p for p in state["hog_pids"] if alive(p)]
    return {"verified": bool(running), "hog_pids_running": running}


def _xid(g: dict, a: argparse.Namespace) -> dict:
    """Emulated: the kernel's line format for log scrapers; DCGM's XID field comes from NVML driver events and
    does not see it. The real effect is the worker's death."""
    pid = worker_pid(g["uuid"], a.run) if a.kill_worker else None
    line = f"NVRM: Xid (PCI:{g['bus_id']}): {a.xid}, pid={pid or 0}, name=chaosbench, Ch 00000000\n"
    with open(KMSG, "w") as fh:
        fh.write(f"<3>{line}")
    out = {"xid": a.xid, "kmsg": line.strip(), "emulated": True}
    if pid is not None:
        # The real effect: the worker on that GPU dies as it would on a fatal XID.
        os.kill(pid, signal.SIGKILL)
        out["killed_pid"] = pid
    return out


def _xid_verify(gpu: str, state: dict) -> dict:
    pid = state.get("killed_pid")
    return {"verified": pid is None or not alive(pid), "killed_pid": pid, "kmsg": state["kmsg"]}


def _sigstop(g: dict, a: argparse.Namespace) -> dict:
    pid = worker_pid(g["uuid"], a.run)
    os.kill(pid, signal.SIGSTOP)
    return {"stopped_pid": pid}


def _sigstop_verify(gpu: str, state: dict) -> dict:
    st = proc_state(state["stopped_pid"])
    return {"verified": st == "T", "pid": state["stopped_pid"], "proc_state": st}


def _sigstop_recover(gpu: str, state: dict) -> dict:
    try:
        os.kill(state["stopped_pid"], signal.SIGCONT)
        return {"continued_pid": state["stopped_pid"]}
    except ProcessLookupError:
        return {"continued_pid": None}


def _cpu_quota(g: dict, a: argparse.Namespace) -> dict:
    version, cg = cpu_cgroup(worker_pid(g["uuid"], a.run))
    state = {"cgroup": str(cg), "cgroup_version": version, "previous": read_quota(version, cg),
             "throttled_before": throttled_periods(cg)}
    write_quota(version, cg, str(a.cpu_percent * a.period_us // 100), str(a.period_us))
    return state


def _cpu_quota_verify(gpu: str, state: dict) -> dict:
    cg = Path(state["cgroup"])
    now = read_quota(state["cgroup_version"], cg)
    grown = throttled_periods(cg) - state["throttled_before"]
    return {"verified": now != state["previous"] and grown > 0, "quota": now, "throttled_periods": grown}


def _cpu_quota_recover(gpu: str, state: dict) -> dict:
    quota, period = state["previous"].split()
    write_quota(state["cgroup_version"], Path(state["cgroup"]), "max" if quota in ("max", "-1") else quota, period)
    return {"quota": state["previous"]}


def _nothing(gpu: str, state: dict) -> dict:
    return {}


@dataclass(frozen=True)
class Mechanism:
    inject: Callable[[dict, argparse.Namespace], dict]
    verify: Callable[[str, dict], dict]
    recover: Callable[[str, dict], dict] = _nothing


# What the agent can do to a GPU node; a fault module's cluster action names one (harness/faults/*.py).
MECHANISMS: dict[str, Mechanism] = {
    "power-cap": Mechanism(_power_cap, _power_cap_verify, _power_cap_recover),
    "clock-lock": Mechanism(_clock_lock, _clock_lock_verify, _clock_lock_recover),
    "gemm-hog": Mechanism(_gemm_hog, _hogs_verify),
    "memory-hog": Mechanism(_memory_hog, _memory_hog_verify),
    "link-hog": Mechanism(_link_hog, _hogs_verify),
    "xid": Mechanism(_xid, _xid_verify),
    "sigstop": Mechanism(_sigstop, _sigstop_verify, _sigstop_recover),
    "cpu-quota": Mechanism(_cpu_quota, _cpu_quota_verify, _cpu_quota_recover),
}


# ----------------------------------------------------------------------------- inject / verify / recover


def inject(a: argparse.Namespace) -> dict:
    name = a.mechanism
    g = resolve_gpu(a.gpu, a.run)
    gpu = g["uuid"]
    if load_state(name, gpu):
        raise AgentError(f"{name} already injected on GPU {gpu}: recover it first")
    state: dict = {"mechanism": name, "gpu": gpu, "index": int(g["index"]), "t": time.time()}
    state.update(MECHANISMS[name].inject(g, a))
    save_state(name, gpu, state)
    return {"injected": name, **state}


def verify(a: argparse.Namespace) -> dict:
    name = a.mechanism
    gpu = resolve_gpu(a.gpu, a.run)["uuid"]
    state = load_state(name, gpu)
    if state is None:
        return {"verified": False, "reason": f"{name} not injected on GPU {gpu}"}
    return MECHANISMS[name].verify(gpu, state)


def recover(a: argparse.Namespace) -> dict:
    name = a.mechanism
    try:
        gpu = resolve_gpu(a.gpu, a.run)["uuid"]
    except AgentError:  # the worker is gone (a killed rank): recover what the state files say was done
        gpu = next((s["gpu"] for s in _all_states() if s.get("mechanism") == name), a.gpu)
    state = load_state(name, gpu)
    if state is None:
        return {"recovered": name, "gpu": gpu, "noop": True}
    done = MECHANISMS[name].recover(gpu, state)
    if state.get("hog_pids"):
        done["killed"] = kill_pids(state["hog_pids"])
    _state_file(name, gpu).unlink(missing_ok=True)
    return {"recovered": name, "gpu": gpu, **done}


def status(_: argparse.Namespace) -> dict:
    out = nvsmi("--query-gpu=index,uuid,power.limit,clocks.sm,memory.used", "--format=csv,noheader,nounits")
    found = []
    for line in out.splitlines():
        idx, uuid, limit, clock, used = (v.strip() for v in line.split(","))
        found.append({"index": int(idx), "uuid": uuid, "power_limit_w": limit, "sm_clock_mhz": clock,
                      "memory_used_mib": used, "pids": gpu_pids(uuid)})
    return {"gpus": found, "active": _all_states()}


def locate(a: argparse.Namespace) -> dict:
    return {"run": a.run, "workers": run_workers(a.run), "engines": engines_here(a.run)}


# ----------------------------------------------------------------------------- hog processes


def _gemm(size: str, until: str) -> None:
    import torch  # only in the hog process

    dev = torch.device("cuda:0")
    n = int(size)
    a, b = torch.randn(n, n, device=dev, dtype=torch.float16), torch.randn(n, n, device=dev, dtype=torch.float16)
    while time.time() < float(until):
        for _ in range(50):
            a = torch.matmul(a, b).clamp_(-1, 1)
        torch.cuda.synchronize(dev)


def _mem(mib: str, mode: str, duration: str, until: str) -> None:
    import torch

    dev, total, held = torch.device("cuda:0"), int(mib), []
    chunk = 256 if mode == "growing" else total
    pause = float(duration) / max(1, total // chunk) if mode == "growing" else 0.0
    while sum(t.numel() for t in held) // 2**20 < total and time.time() < float(until):
        held.append(torch.empty(chunk * 2**20, dtype=torch.uint8, device=dev))
        time.sleep(pause)
    while time.time() < float(until):
        time.sleep(0.5)


def _link(link: str, until: str) -> None:
    import torch

    src = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda:0")
    # nvlink: device-to-device copies to the peer GPU (cuda:1); pcie: host-bounce through pinned memory
    if link == "nvlink":
        dst = torch.empty_like(src, device="cuda:1")
    else:
        dst = torch.empty_like(src, device="cpu").pin_memory()
    while time.time() < float(until):
        for _ in range(10):
            dst.copy_(src, non_blocking=True)
            if link == "pcie":
                src.copy_(dst, non_blocking=True)
        torch.cuda.synchronize(src.device)


HOGS = {"_gemm": _gemm, "_mem": _mem, "_link": _link}


# ----------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fault_agent.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("inject", "verify", "recover"):
        c = sub.add_parser(name)
        c.add_argument("mechanism", choices=MECHANISMS)
        c.add_argument("--gpu", required=True, help="NVML UUID, index, or worker[:k] (k-th GPU of the run)")
        c.add_argument("--run", default="", help="the RayService whose processes are the run's")
        if name == "inject":
            c.add_argument("--watts", type=int, default=150)
            c.add_argument("--mhz", type=int, default=500)
            c.add_argument("--workers", type=int, default=1)
            c.add_argument("--size", type=int, default=8192)
            c.add_argument("--fraction", type=float, default=0.8)
            c.add_argument("--mode", choices=("fixed", "growing"), default="fixed")
            c.add_argument("--xid", type=int, default=79)
            c.add_argument("--kill-worker", action=argparse.BooleanOptionalAction, default=True)
            c.add_argument("--peer", default="worker:1", help="peer GPU for nvlink load (as --gpu)")
            c.add_argument("--link", choices=("nvlink", "pcie"), default="pcie")
            c.add_argument("--duration", type=float, default=60.0, help="hogs stop by themselves after this")
            c.add_argument("--cpu-percent", type=int, default=25, help="CPU quota, percent of one core")
            c.add_argument("--period-us", type=int, default=100000)
    sub.add_parser("status")
    sub.add_parser("locate").add_argument("--run", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in HOGS:
        HOGS[argv[0]](*argv[1:])
        return 0
    args = parser().parse_args(argv)
    handler = {"inject": inject, "verify": verify, "recover": recover, "status": status, "locate": locate}[args.command]
    try:
        result = handler(args)
    except (AgentError, OSError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
