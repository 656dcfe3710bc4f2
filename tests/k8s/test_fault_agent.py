"""The fault agent run as in its pod (a subprocess), against a stand-in nvidia-smi and real processes.

nvidia-smi is replaced by a script keeping the GPU settings in a JSON file; the
"inference worker" is a real ``sleep`` process, so SIGSTOP/SIGCONT and SIGKILL are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "harness" / "backends" / "k8s" / "agent" / "fault_agent.py"

FAKE_NVSMI = r'''#!{python}
import json, sys
state_path = {state!r}
st = json.load(open(state_path))
args = sys.argv[1:]
gpu = args[args.index("-i") + 1] if "-i" in args else None
g = st["gpus"][gpu] if gpu is not None else None
if "-pl" in args:
    g["power.limit"] = args[args.index("-pl") + 1]
elif "-lgc" in args:
    g["clocks.sm"] = args[args.index("-lgc") + 1].split(",")[0]
elif "-rgc" in args:
    g["clocks.sm"] = g["clocks.max.sm"]
elif any(a.startswith("--query-compute-apps") for a in args):
    for pid, bus in st["apps"]:
        print(f"{{pid}}, {{bus}}")
elif any(a.startswith("--query-gpu") for a in args):
    fields = [a for a in args if a.startswith("--query-gpu")][0].split("=", 1)[1].split(",")
    gpus = [g] if g is not None else list(st["gpus"].values())
    for one in gpus:
        print(", ".join(str(one[f]) for f in fields))
else:
    sys.exit(f"unsupported: {{args}}")
json.dump(st, open(state_path, "w"))
'''


@pytest.fixture
def bed(tmp_path: Path):
    worker = subprocess.Popen(["sleep", "120"])
    state = tmp_path / "gpus.json"
    gpus = {str(i): {"index": i, "pci.bus_id": f"00000000:{0x18 + i:02X}:00.0", "power.limit": "700.00",
                     "power.default_limit": "700.00", "clocks.sm": "1980", "clocks.max.sm": "1980",
                     "memory.total": "81559", "memory.used": "60000"} for i in range(2)}
    state.write_text(json.dumps({"gpus": gpus, "apps": [[worker.pid, gpus["1"]["pci.bus_id"]]]}))
    nvsmi = tmp_path / "nvidia-smi"
    nvsmi.write_text(FAKE_NVSMI.format(python=sys.executable, state=str(state)))
    nvsmi.chmod(0o755)
    env = {**os.environ, "CHAOSBENCH_NVIDIA_SMI": str(nvsmi), "CHAOSBENCH_AGENT_STATE": str(tmp_path / "agent"),
           "CHAOSBENCH_KMSG": str(tmp_path / "kmsg"), "CHAOSBENCH_CGROUP_ROOT": str(tmp_path / "cgroup")}

    def agent(*args: str) -> tuple[int, dict]:
        out = subprocess.run([sys.executable, str(AGENT), *args], capture_output=True, text=True, env=env, timeout=60)
        return out.returncode, json.loads(out.stdout.strip().splitlines()[-1])

    yield agent, state, worker, tmp_path
    if worker.poll() is None:
        os.kill(worker.pid, signal.SIGCONT)
        worker.kill()
    worker.wait()


def _proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_power_cap_round_trip(bed):
    agent, state, _, _ = bed
    assert agent("verify", "gpu-power-cap", "--gpu", "0")[1]["verified"] is False  # nothing injected yet
    rc, out = agent("inject", "gpu-power-cap", "--gpu", "0", "--watts", "150")
    assert rc == 0 and out["default_watts"] == 700.0
    assert json.loads(state.read_text())["gpus"]["0"]["power.limit"] == "150"
    assert agent("verify", "gpu-power-cap", "--gpu", "0")[1]["verified"] is True
    rc, out = agent("inject", "gpu-power-cap", "--gpu", "0", "--watts", "150")
    assert rc == 1 and "already injected" in out["error"]
    assert agent("recover", "gpu-power-cap", "--gpu", "0")[1]["power_limit_w"] == 700.0
    assert json.loads(state.read_text())["gpus"]["0"]["power.limit"] == "700"
    assert agent("recover", "gpu-power-cap", "--gpu", "0")[1]["noop"] is True  # idempotent


def test_clock_lock_and_reset(bed):
    agent, state, _, _ = bed
    agent("inject", "gpu-clock-lock", "--gpu", "1", "--mhz", "500")
    assert json.loads(state.read_text())["gpus"]["1"]["clocks.sm"] == "500"
    assert agent("verify", "gpu-clock-lock", "--gpu", "1")[1] == {"verified": True, "sm_clock_mhz": 500.0}
    agent("recover", "gpu-clock-lock", "--gpu", "1")
    assert json.loads(state.read_text())["gpus"]["1"]["clocks.sm"] == "1980"


def test_nccl_hang_stops_the_worker_on_that_gpu(bed):
    agent, _, worker, _ = bed
    rc, out = agent("inject", "nccl-hang", "--gpu", "0")
    assert rc == 1 and "no inference worker" in out["error"]  # the worker is on GPU 1, not 0
    rc, out = agent("inject", "nccl-hang", "--gpu", "1")
    assert rc == 0 and out["stopped_pid"] == worker.pid
    assert _proc_state(worker.pid) == "T"
    assert agent("verify", "nccl-hang", "--gpu", "1")[1]["verified"] is True
    agent("recover", "nccl-hang", "--gpu", "1")
    time.sleep(0.1)
    assert _proc_state(worker.pid) in {"S", "R"}


def test_xid_writes_kmsg_and_kills_the_worker(bed):
    agent, _, worker, tmp = bed
    rc, out = agent("inject", "gpu-xid-error", "--gpu", "1", "--xid", "79")
    assert rc == 0 and out["killed_pid"] == worker.pid
    worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL
    assert (tmp / "kmsg").read_text() == "<3>NVRM: Xid (PCI:00000000:19:00.0): 79, pid=%d, name=chaosbench, " \
                                         "Ch 00000000\n" % worker.pid
    assert agent("verify", "gpu-xid-error", "--gpu", "1")[1]["verified"] is True


def test_cpu_throttle_on_the_worker_cgroup_v1(bed):
    agent, _, worker, tmp = bed
    lines = Path(f"/proc/{worker.pid}/cgroup").read_text().splitlines()
    cpu = [ln for ln in lines if "cpu" in ln.split(":")[1].split(",")]
    if not cpu:
        pytest.skip("no cgroup v1 cpu controller line for this process")
    _, controllers, path = cpu[0].split(":", 2)
    cg = tmp / "cgroup" / controllers / path.lstrip("/")
    cg.mkdir(parents=True)
    (cg / "cpu.cfs_quota_us").write_text("-1\n")
    (cg / "cpu.cfs_period_us").write_text("100000\n")
    (cg / "cpu.stat").write_text("nr_periods 10\nnr_throttled 3\nthrottled_time 0\n")
    assert agent("inject", "cpu-throttle", "--gpu", "1", "--cpu-percent", "25", "--period-us", "100000")[0] == 0
    assert (cg / "cpu.cfs_quota_us").read_text().strip() == "25000"
    assert agent("verify", "cpu-throttle", "--gpu", "1")[1]["verified"] is False  # quota set, nothing throttled yet
    (cg / "cpu.stat").write_text("nr_periods 50\nnr_throttled 40\nthrottled_time 9\n")
    assert agent("verify", "cpu-throttle", "--gpu", "1")[1]["verified"] is True
    agent("recover", "cpu-throttle", "--gpu", "1")
    assert (cg / "cpu.cfs_quota_us").read_text().strip() == "-1"


def test_status_lists_gpus_and_pids(bed):
    agent, _, worker, _ = bed
    rc, out = agent("status")
    assert rc == 0 and [g["index"] for g in out["gpus"]] == [0, 1]
    assert out["gpus"][1]["pids"] == [worker.pid] and out["gpus"][0]["pids"] == []
