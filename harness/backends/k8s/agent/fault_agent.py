#!/usr/bin/env python3
"""chaosbench fault agent: GPU/NCCL faults on one GPU node (runs in the privileged DaemonSet).

Standalone on purpose (stdlib only; torch only inside the hog processes): it is
shipped into the pod through a ConfigMap and run as
``python3 /opt/agent/fault_agent.py <command> [options]`` by the harness through
the Kubernetes exec API. Every command prints one JSON object on stdout and exits
0, or prints ``{"error": ...}`` and exits 1.

Commands mirror the local injectors' interface: ``inject <fault> ...``,
``verify <fault> ...``, ``recover <fault> ...`` and ``status``. What an inject
changed is kept in a state file (hostPath), so ``recover`` works after an agent
restart and is idempotent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE_DIR = Path(os.environ.get("CHAOSBENCH_AGENT_STATE", "/run/chaosbench-agent"))
NVSMI = os.environ.get("CHAOSBENCH_NVIDIA_SMI", "nvidia-smi")
KMSG = Path(os.environ.get("CHAOSBENCH_KMSG", "/dev/kmsg"))
CGROUP_ROOT = Path(os.environ.get("CHAOSBENCH_CGROUP_ROOT", "/host/sys/fs/cgroup"))
FAULTS = ("gpu-power-cap", "gpu-clock-lock", "gpu-compute-contention", "gpu-memory-pressure", "gpu-xid-error",
          "nccl-hang", "interconnect-degradation", "cpu-throttle")


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


def query_gpu(gpu: int, fields: list[str]) -> dict[str, str]:
    line = nvsmi("-i", str(gpu), f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits").strip()
    return dict(zip(fields, (v.strip() for v in line.split(",")), strict=True))


def gpu_pids(gpu: int) -> list[int]:
    """PIDs of compute processes on the GPU (host PIDs: the pod runs with hostPID)."""
    bus = query_gpu(gpu, ["pci.bus_id"])["pci.bus_id"]
    out = nvsmi("--query-compute-apps=pid,gpu_bus_id", "--format=csv,noheader,nounits")
    pids = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[1] == bus and parts[0].isdigit():
            pids.append(int(parts[0]))
    return pids


def worker_pid(gpu: int) -> int:
    """The inference worker on the GPU: the compute process that is not one of our hogs."""
    ours = {pid for state in _all_states() for pid in state.get("hog_pids", [])}
    pids = [p for p in gpu_pids(gpu) if p not in ours]
    if not pids:
        raise AgentError(f"no inference worker process found on GPU {gpu}")
    return pids[0]


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


def _state_file(fault: str, gpu: int) -> Path:
    return STATE_DIR / f"{fault}.gpu{gpu}.json"


def save_state(fault: str, gpu: int, state: dict) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = _state_file(fault, gpu).with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(_state_file(fault, gpu))


def load_state(fault: str, gpu: int) -> dict | None:
    try:
        return json.loads(_state_file(fault, gpu).read_text())
    except FileNotFoundError:
        return None


def _all_states() -> list[dict]:
    if not STATE_DIR.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(STATE_DIR.glob("*.json"))]


def spawn_hog(kind: str, args: list[str]) -> int:
    """Start a detached hog process (this file, hidden subcommand) and return its PID."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), f"_{kind}", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
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


# ----------------------------------------------------------------------------- inject


def inject(a: argparse.Namespace) -> dict:
    gpu, fault = a.gpu, a.fault
    if load_state(fault, gpu):
        raise AgentError(f"{fault} already injected on GPU {gpu}: recover it first")
    state: dict = {"fault": fault, "gpu": gpu, "t": time.time()}
    if fault == "gpu-power-cap":
        state["default_watts"] = float(query_gpu(gpu, ["power.default_limit"])["power.default_limit"])
        nvsmi("-i", str(gpu), "-pl", str(a.watts))
        state["watts"] = a.watts
    elif fault == "gpu-clock-lock":
        nvsmi("-i", str(gpu), "-lgc", f"{a.mhz},{a.mhz}")
        state["mhz"] = a.mhz
    elif fault == "gpu-compute-contention":
        until = str(time.time() + a.duration)
        state["hog_pids"] = [spawn_hog("gemm", [str(gpu), str(a.size), until]) for _ in range(a.workers)]
    elif fault == "gpu-memory-pressure":
        total = float(query_gpu(gpu, ["memory.total"])["memory.total"])
        mib = int(total * a.fraction)
        until = str(time.time() + a.duration)
        state["hog_pids"] = [spawn_hog("mem", [str(gpu), str(mib), a.mode, str(a.duration), until])]
        state["mib"] = mib
    elif fault == "gpu-xid-error":
        state.update(_xid(gpu, a.xid, a.kill_worker))
    elif fault == "nccl-hang":
        pid = worker_pid(gpu)
        os.kill(pid, signal.SIGSTOP)
        state["stopped_pid"] = pid
    elif fault == "cpu-throttle":
        version, cg = cpu_cgroup(worker_pid(gpu))
        state.update(cgroup=str(cg), cgroup_version=version, previous=read_quota(version, cg),
                     throttled_before=throttled_periods(cg))
        write_quota(version, cg, str(a.cpu_percent * a.period_us // 100), str(a.period_us))
    elif fault == "interconnect-degradation":
        until = str(time.time() + a.duration)
        state["hog_pids"] = [spawn_hog("link", [str(gpu), str(a.peer), a.link, until]) for _ in range(a.workers)]
    save_state(fault, gpu, state)
    return {"injected": fault, **state}


def _xid(gpu: int, code: int, kill_worker: bool) -> dict:
    bus = query_gpu(gpu, ["pci.bus_id"])["pci.bus_id"]
    pid = worker_pid(gpu) if kill_worker else None
    # The kernel's own format, so log scrapers and DCGM's XID watcher parse it alike (signal-only).
    line = f"NVRM: Xid (PCI:{bus}): {code}, pid={pid or 0}, name=chaosbench, Ch 00000000\n"
    with open(KMSG, "w") as fh:
        fh.write(f"<3>{line}")
    out = {"xid": code, "kmsg": line.strip()}
    if pid is not None:
        # The real effect: the worker on that GPU dies as it would on a fatal XID.
        os.kill(pid, signal.SIGKILL)
        out["killed_pid"] = pid
    return out


# ----------------------------------------------------------------------------- verify / recover


def verify(a: argparse.Namespace) -> dict:
    gpu, fault = a.gpu, a.fault
    state = load_state(fault, gpu)
    if state is None:
        return {"verified": False, "reason": f"{fault} not injected on GPU {gpu}"}
    if fault == "gpu-power-cap":
        got = float(query_gpu(gpu, ["power.limit"])["power.limit"])
        return {"verified": abs(got - state["watts"]) <= 1.0, "power_limit_w": got}
    if fault == "gpu-clock-lock":
        got = float(query_gpu(gpu, ["clocks.sm"])["clocks.sm"])
        return {"verified": got <= state["mhz"] * 1.05, "sm_clock_mhz": got}
    if fault in ("gpu-compute-contention", "gpu-memory-pressure", "interconnect-degradation"):
        running = [p for p in state["hog_pids"] if alive(p)]
        return {"verified": bool(running), "hog_pids_running": running}
    if fault == "nccl-hang":
        st = proc_state(state["stopped_pid"])
        return {"verified": st == "T", "pid": state["stopped_pid"], "proc_state": st}
    if fault == "cpu-throttle":
        cg = Path(state["cgroup"])
        now = read_quota(state["cgroup_version"], cg)
        grown = throttled_periods(cg) - state["throttled_before"]
        return {"verified": now != state["previous"] and grown > 0, "quota": now, "throttled_periods": grown}
    if fault == "gpu-xid-error":
        pid = state.get("killed_pid")
        return {"verified": pid is None or not alive(pid), "killed_pid": pid, "kmsg": state["kmsg"]}
    raise AgentError(f"unknown fault {fault}")


def recover(a: argparse.Namespace) -> dict:
    gpu, fault = a.gpu, a.fault
    state = load_state(fault, gpu)
    if state is None:
        return {"recovered": fault, "gpu": gpu, "noop": True}
    done: dict = {}
    if fault == "gpu-power-cap":
        nvsmi("-i", str(gpu), "-pl", str(int(state["default_watts"])))
        done["power_limit_w"] = state["default_watts"]
    elif fault == "gpu-clock-lock":
        nvsmi("-i", str(gpu), "-rgc")
        done["clocks"] = "reset"
    elif fault == "nccl-hang":
        try:
            os.kill(state["stopped_pid"], signal.SIGCONT)
            done["continued_pid"] = state["stopped_pid"]
        except ProcessLookupError:
            done["continued_pid"] = None
    elif fault == "cpu-throttle":
        quota, period = state["previous"].split()
        write_quota(state["cgroup_version"], Path(state["cgroup"]), "max" if quota in ("max", "-1") else quota, period)
        done["quota"] = state["previous"]
    if state.get("hog_pids"):
        done["killed"] = kill_pids(state["hog_pids"])
    _state_file(fault, gpu).unlink(missing_ok=True)
    return {"recovered": fault, "gpu": gpu, **done}


def status(_: argparse.Namespace) -> dict:
    out = nvsmi("--query-gpu=index,pci.bus_id,power.limit,clocks.sm,memory.used", "--format=csv,noheader,nounits")
    gpus = []
    for line in out.splitlines():
        idx, bus, limit, clock, used = (v.strip() for v in line.split(","))
        gpus.append({"index": int(idx), "pci_bus_id": bus, "power_limit_w": limit, "sm_clock_mhz": clock,
                     "memory_used_mib": used, "pids": gpu_pids(int(idx))})
    return {"gpus": gpus, "active": _all_states()}


# ----------------------------------------------------------------------------- hog processes


def _gemm(gpu: str, size: str, until: str) -> None:
    import torch  # only in the hog process

    dev = torch.device(f"cuda:{gpu}")
    n = int(size)
    a, b = torch.randn(n, n, device=dev, dtype=torch.float16), torch.randn(n, n, device=dev, dtype=torch.float16)
    while time.time() < float(until):
        for _ in range(50):
            a = torch.matmul(a, b).clamp_(-1, 1)
        torch.cuda.synchronize(dev)


def _mem(gpu: str, mib: str, mode: str, duration: str, until: str) -> None:
    import torch

    dev, total, held = torch.device(f"cuda:{gpu}"), int(mib), []
    chunk = 256 if mode == "growing" else total
    pause = float(duration) / max(1, total // chunk) if mode == "growing" else 0.0
    while sum(t.numel() for t in held) // 2**20 < total and time.time() < float(until):
        held.append(torch.empty(chunk * 2**20, dtype=torch.uint8, device=dev))
        time.sleep(pause)
    while time.time() < float(until):
        time.sleep(0.5)


def _link(gpu: str, peer: str, link: str, until: str) -> None:
    import torch

    src = torch.empty(256 * 2**20, dtype=torch.uint8, device=f"cuda:{gpu}")
    # nvlink: device-to-device copies to the peer GPU; pcie: host-bounce through pinned memory
    if link == "nvlink":
        dst = torch.empty_like(src, device=f"cuda:{peer}")
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
        c.add_argument("fault", choices=FAULTS)
        c.add_argument("--gpu", type=int, required=True, help="local GPU index on this node")
        if name == "inject":
            c.add_argument("--watts", type=int, default=150)
            c.add_argument("--mhz", type=int, default=500)
            c.add_argument("--workers", type=int, default=1)
            c.add_argument("--size", type=int, default=8192)
            c.add_argument("--fraction", type=float, default=0.8)
            c.add_argument("--mode", choices=("fixed", "growing"), default="fixed")
            c.add_argument("--xid", type=int, default=79)
            c.add_argument("--kill-worker", action=argparse.BooleanOptionalAction, default=True)
            c.add_argument("--peer", type=int, default=0, help="peer GPU for nvlink load")
            c.add_argument("--link", choices=("nvlink", "pcie"), default="pcie")
            c.add_argument("--duration", type=float, default=60.0, help="hogs stop by themselves after this")
            c.add_argument("--cpu-percent", type=int, default=25, help="CPU quota, percent of one core")
            c.add_argument("--period-us", type=int, default=100000)
    sub.add_parser("status")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in HOGS:
        HOGS[argv[0]](*argv[1:])
        return 0
    args = parser().parse_args(argv)
    handler = {"inject": inject, "verify": verify, "recover": recover, "status": status}[args.command]
    try:
        result = handler(args)
    except (AgentError, OSError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
