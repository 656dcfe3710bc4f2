"""The fault agent run as in its pod (a subprocess), against a stand-in nvidia-smi and real processes.

nvidia-smi is replaced by a script keeping the GPU settings in a JSON file (``-i`` takes an index or a
UUID, as the real one does; the query fields are nvidia-smi's own names); the "inference worker" is a
real ``sleep`` process carrying the run's environment variable, so /proc/<pid>/environ, SIGSTOP/SIGCONT
and SIGKILL are real. Another process on the same GPU without that variable belongs to someone else.
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
RUN = "cb-test"

FAKE_NVSMI = r'''#!{python}
import json, sys
state_path = {state!r}
st = json.load(open(state_path))
args = sys.argv[1:]
gpu = args[args.index("-i") + 1] if "-i" in args else None
g = next((one for one in st["gpus"].values() if gpu in (str(one["index"]), one["uuid"])), None)
if gpu is not None and g is None:
    sys.exit(f"No devices were found matching {{gpu}}")
if "-pl" in args:
    watts = float(args[args.index("-pl") + 1])
    if not float(g["power.min_limit"]) <= watts <= float(g["power.max_limit"]):
        sys.exit("Provided power limit is not a valid power limit which should be between min and max")
    g["power.limit"] = args[args.index("-pl") + 1]
elif "-lgc" in args:
    g["clocks.sm"] = args[args.index("-lgc") + 1].split(",")[0]
elif "-rgc" in args:
    g["clocks.sm"] = g["clocks.max.sm"]
elif any(a.startswith("--query-compute-apps") for a in args):
    for pid, uuid in st["apps"]:
        print(f"{{pid}}, {{uuid}}")
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
    worker = subprocess.Popen(["sleep", "120"], env={**os.environ, "CHAOSBENCH_RAYSERVICE": RUN})
    stranger = subprocess.Popen(["sleep", "120"])  # another tenant's process on GPU 0
    state = tmp_path / "gpus.json"
    gpus = {str(i): {"index": i, "uuid": f"GPU-aaaa-{i}", "pci.bus_id": f"00000000:{0x18 + i:02X}:00.0",
                     "power.limit": "700.00", "power.default_limit": "700.00", "power.min_limit": "200.00",
                     "power.max_limit": "700.00", "clocks.sm": "1980", "clocks.max.sm": "1980",
                     "memory.total": "81559", "memory.used": "60000", "memory.free": "21559"} for i in range(2)}
    state.write_text(json.dumps({"gpus": gpus, "apps": [[stranger.pid, "GPU-aaaa-0"], [worker.pid, "GPU-aaaa-1"]]}))
    nvsmi = tmp_path / "nvidia-smi"
    nvsmi.write_text(FAKE_NVSMI.format(python=sys.executable, state=str(state)))
    nvsmi.chmod(0o755)
    env = {**os.environ, "CHAOSBENCH_NVIDIA_SMI": str(nvsmi), "CHAOSBENCH_AGENT_STATE": str(tmp_path / "agent"),
           "CHAOSBENCH_KMSG": str(tmp_path / "kmsg"), "CHAOSBENCH_CGROUP_ROOT": str(tmp_path / "cgroup")}

    def agent(*args: str) -> tuple[int, dict]:
        out = subprocess.run([sys.executable, str(AGENT), *args], capture_output=True, text=True, env=env, timeout=60)
        return out.returncode, json.loads(out.stdout.strip().splitlines()[-1])

    yield agent, state, worker, tmp_path
    stranger.kill()
    stranger.wait()
    if worker.poll() is None:
        os.kill(worker.pid, signal.SIGCONT)
        worker.kill()
    worker.wait()


def _proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_power_cap_round_trip(bed):
    agent, state, _, _ = bed
    assert agent("verify", "power-cap", "--gpu", "0")[1]["verified"] is False  # nothing injected yet
    rc, out = agent("inject", "power-cap", "--gpu", "0", "--watts", "350")
    assert rc == 0 and out["default_watts"] == 700.0 and out["watts"] == 350 and out["gpu"] == "GPU-aaaa-0"
    assert json.loads(state.read_text())["gpus"]["0"]["power.limit"] == "350"
    assert agent("verify", "power-cap", "--gpu", "GPU-aaaa-0")[1]["verified"] is True  # index or UUID alike
    rc, out = agent("inject", "power-cap", "--gpu", "0", "--watts", "350")
    assert rc == 1 and "already injected" in out["error"]
    assert agent("recover", "power-cap", "--gpu", "0")[1]["power_limit_w"] == 700.0
    assert json.loads(state.read_text())["gpus"]["0"]["power.limit"] == "700"
    assert agent("recover", "power-cap", "--gpu", "0")[1]["noop"] is True  # idempotent


def test_power_cap_below_the_boards_range_is_clamped_to_its_minimum(bed):
    """A datacenter board accepts power.min_limit..max_limit (here 200-700 W): 150 W becomes 200 W, not an error."""
    agent, state, _, _ = bed
    rc, out = agent("inject", "power-cap", "--gpu", "0", "--watts", "150")
    assert rc == 0 and out["watts"] == 200 and out["requested_watts"] == 150
    assert json.loads(state.read_text())["gpus"]["0"]["power.limit"] == "200"
    assert agent("verify", "power-cap", "--gpu", "0")[1]["verified"] is True


def test_power_cap_that_would_not_lower_the_limit_is_refused(bed):
    agent, state, _, _ = bed
    rc, out = agent("inject", "power-cap", "--gpu", "0", "--watts", "900")
    assert rc == 1 and "would not lower it" in out["error"] and "200-700 W" in out["error"]
    assert json.loads(state.read_text())["gpus"]["0"]["power.limit"] == "700.00"


def test_memory_hog_is_sized_from_free_memory(bed, monkeypatch):
    """fraction applies to the memory the engine left free, not to the board's total (vLLM holds its share)."""
    agent, _, _, tmp = bed
    rc, out = agent("inject", "memory-hog", "--gpu", "worker", "--run", RUN, "--fraction", "0.5",
                    "--duration", "1")
    assert rc == 0 and out["gpu"] == "GPU-aaaa-1"
    assert out["mib"] == int((21559 - 256) * 0.5) and out["free_mib_before"] == 21559.0
    agent("recover", "memory-hog", "--gpu", "worker", "--run", RUN)


def test_locate_reports_the_runs_workers_only(bed):
    agent, _, worker, _ = bed
    rc, out = agent("locate", "--run", RUN)
    assert rc == 0 and out["workers"] == [{"pid": worker.pid, "uuid": "GPU-aaaa-1", "index": 1,
                                           "bus_id": "00000000:19:00.0"}]
    assert out["engines"] == 0  # no Serve LLM replica process here
    assert agent("locate", "--run", "cb-other")[1]["workers"] == []


def test_clock_lock_and_reset(bed):
    agent, state, _, _ = bed
    agent("inject", "clock-lock", "--gpu", "1", "--mhz", "500")
    assert json.loads(state.read_text())["gpus"]["1"]["clocks.sm"] == "500"
    assert agent("verify", "clock-lock", "--gpu", "1")[1] == {"verified": True, "sm_clock_mhz": 500.0}
    agent("recover", "clock-lock", "--gpu", "1")
    assert json.loads(state.read_text())["gpus"]["1"]["clocks.sm"] == "1980"


def test_nccl_hang_stops_the_worker_on_that_gpu(bed):
    agent, _, worker, _ = bed
    rc, out = agent("inject", "sigstop", "--gpu", "0", "--run", RUN)
    assert rc == 1 and "no vLLM worker process" in out["error"]  # GPU 0 only has another tenant's process
    rc, out = agent("inject", "sigstop", "--gpu", "GPU-aaaa-1", "--run", RUN)
    assert rc == 0 and out["stopped_pid"] == worker.pid
    assert _proc_state(worker.pid) == "T"
    assert agent("verify", "sigstop", "--gpu", "1")[1]["verified"] is True
    agent("recover", "sigstop", "--gpu", "1")
    time.sleep(0.1)
    assert _proc_state(worker.pid) in {"S", "R"}


def test_xid_writes_kmsg_and_kills_the_worker(bed):
    agent, _, worker, tmp = bed
    rc, out = agent("inject", "xid", "--gpu", "1", "--run", RUN, "--xid", "79")
    assert rc == 0 and out["killed_pid"] == worker.pid and out["emulated"] is True
    worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL
    assert (tmp / "kmsg").read_text() == "<3>NVRM: Xid (PCI:00000000:19:00.0): 79, pid=%d, name=chaosbench, " \
                                         "Ch 00000000\n" % worker.pid
    assert agent("verify", "xid", "--gpu", "1")[1]["verified"] is True


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
    assert agent("inject", "cpu-quota", "--gpu", "worker", "--run", RUN, "--cpu-percent", "25",
                 "--period-us", "100000")[0] == 0
    assert (cg / "cpu.cfs_quota_us").read_text().strip() == "25000"
    assert agent("verify", "cpu-quota", "--gpu", "worker", "--run", RUN)[1]["verified"] is False  # quota set, nothing throttled yet
    (cg / "cpu.stat").write_text("nr_periods 50\nnr_throttled 40\nthrottled_time 9\n")
    assert agent("verify", "cpu-quota", "--gpu", "worker", "--run", RUN)[1]["verified"] is True
    agent("recover", "cpu-quota", "--gpu", "worker", "--run", RUN)
    assert (cg / "cpu.cfs_quota_us").read_text().strip() == "-1"


def test_status_lists_gpus_and_pids(bed):
    agent, _, worker, _ = bed
    rc, out = agent("status")
    assert rc == 0 and [g["index"] for g in out["gpus"]] == [0, 1]
    assert out["gpus"][1]["pids"] == [worker.pid] and out["gpus"][0]["uuid"] == "GPU-aaaa-0"


def test_a_dry_run_placeholder_is_refused_in_one_line(bed):
    agent, _, _, _ = bed
    rc, out = agent("inject", "clock-lock", "--gpu", "{gpu_uuid:rank-2}", "--mhz", "500")
    assert rc == 1 and "deploy first" in out["error"]
