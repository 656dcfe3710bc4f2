"""A small real testbed for fault tests: two network namespaces on a bridge, one v1/v2 cgroup set per node,
one "rank" process per node (a half-busy Python loop pinned to a core, inside its node's cgroups), a TCP echo
server in node-1, and a device control dir. Optionally the engine's own device layer (chaosbench.engines.mini.device)
exported per rank and scraped by a real Prometheus, for the emulated GPU faults.

Everything is named ``cbflt<id>...`` (namespaces, bridge, veths, cgroups) and torn down by ``FaultBed.close``.
``FaultBed`` satisfies chaosbench.backends.base.Testbed and round-trips through JSON, so a child "harness" process
can rebuild it (exit-path tests).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chaosbench.backends.base import DeviceControl, NodeInfo, RankInfo, Testbed

REPO = Path(__file__).resolve().parents[2]
CG = Path("/sys/fs/cgroup")
RANK_LOOP = (
    "import time\n"
    "while True:\n"
    "    t = time.perf_counter()\n"
    "    while time.perf_counter() - t < 0.02: pass\n"
    "    time.sleep(0.02)\n"
)
ECHO_SERVER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 7007)); s.listen(16)\n"
    "while True:\n"
    "    c, _ = s.accept()\n"
    "    while (d := c.recv(65536)): c.sendall(d)\n"
    "    c.close()\n"
)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {res.stderr.strip()}")
    return res


def cgroup_v2() -> bool:
    return (CG / "cgroup.controllers").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _subnet() -> int:
    used = set(re.findall(r"inet 10\.251\.(\d+)\.", sh("ip", "-o", "-4", "addr", "show").stdout))
    return next(k for k in range(1, 255) if str(k) not in used)


@dataclass
class FaultBed(Testbed):
    run_dir: Path
    nodes: dict[str, NodeInfo]
    ranks: dict[str, RankInfo]
    control_dir: Path
    bridge: str
    cgroup_roots: list[str]
    pids: list[int] = field(default_factory=list)  # every process the bed started
    prometheus_url: str = ""
    api_url: str = ""
    backend: str = "local"
    engine: str = "mini"

    def device(self, rank: str) -> DeviceControl:
        return DeviceControl(self.control_dir, rank)

    def node_pids(self, node: str) -> list[int]:
        return [r.pid for r in self.ranks.values() if r.node == node and r.pid]

    def rank_pid(self, rank: str) -> int:
        pid = self.ranks[rank].pid
        assert pid is not None
        return pid

    # ------------------------------------------------------------------ json (child harness processes)
    def to_json(self) -> str:
        d = asdict(self)
        d["run_dir"], d["control_dir"] = str(self.run_dir), str(self.control_dir)
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> FaultBed:
        d = json.loads(text)
        nodes = {k: NodeInfo(**{**v, "cpus": tuple(v["cpus"])}) for k, v in d.pop("nodes").items()}
        ranks = {k: RankInfo(**v) for k, v in d.pop("ranks").items()}
        return cls(nodes=nodes, ranks=ranks, run_dir=Path(d.pop("run_dir")), control_dir=Path(d.pop("control_dir")),
                   **d)

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        for node in self.nodes.values():
            if node.netns:
                sh("ip", "netns", "del", node.netns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)
        for root in self.cgroup_roots:
            for d in sorted(Path(root).glob("*"), reverse=True):
                if d.is_dir():
                    d.rmdir()
            Path(root).rmdir() if Path(root).is_dir() else None


def _spawn(bed: FaultBed, argv: list[str], *, netns: str | None = None, cgroup_dirs: list[str] = (),
           cpus: set[int] | None = None) -> int:
    def setup() -> None:
        for d in dict.fromkeys(cgroup_dirs):
            Path(d, "cgroup.procs").write_text(str(os.getpid()))
        if cpus:
            os.sched_setaffinity(0, cpus)

    cmd = (["ip", "netns", "exec", netns] if netns else []) + argv
    proc = subprocess.Popen(cmd, preexec_fn=setup, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bed.pids.append(proc.pid)
    return proc.pid


def _cgroups(bed_id: str, node: str) -> tuple[dict[str, str], list[str]]:
    if cgroup_v2():
        root = CG / f"cbflt{bed_id}"
        d = root / node
        d.mkdir(parents=True, exist_ok=True)
        (root / "cgroup.subtree_control").write_text("+cpu +memory")
        return {"cpu": str(d), "memory": str(d)}, [str(root)]
    out, roots = {}, []
    for ctrl in ("cpu", "memory"):
        root = CG / ctrl / f"cbflt{bed_id}"
        (root / node).mkdir(parents=True, exist_ok=True)
        out[ctrl], roots = str(root / node), roots + [str(root)]
    return out, roots


def make_bed(run_dir: Path, *, with_prometheus: bool = False) -> FaultBed:
    bed_id, k = secrets.token_hex(2), _subnet()
    bridge = f"cbflt{bed_id}"
    bed = FaultBed(run_dir=run_dir, nodes={}, ranks={}, control_dir=run_dir / "device", bridge=bridge,
                   cgroup_roots=[])
    bed.control_dir.mkdir(parents=True, exist_ok=True)
    try:
        sh("ip", "link", "add", bridge, "type", "bridge")
        sh("ip", "addr", "add", f"10.251.{k}.1/24", "dev", bridge)
        sh("ip", "link", "set", bridge, "up")
        ncpu = os.cpu_count() or 1
        for i in range(2):
            name, ns, host = f"node-{i}", f"cbflt{bed_id}-n{i}", f"cbflt{bed_id}h{i}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", host, "master", bridge, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.251.{k}.{i + 2}/24", "dev", "eth0")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            cgroups, roots = _cgroups(bed_id, name)
            bed.cgroup_roots = list(dict.fromkeys(bed.cgroup_roots + roots))
            bed.nodes[name] = NodeInfo(name, f"10.251.{k}.{i + 2}", ns, host, "eth0", cgroups, (i % ncpu,))
            pid = _spawn(bed, [sys.executable, "-c", RANK_LOOP], netns=ns, cgroup_dirs=list(cgroups.values()),
                         cpus={i % ncpu})
            bed.ranks[f"rank-{i}"] = RankInfo(f"rank-{i}", i, name, pid)
        _spawn(bed, [sys.executable, "-c", ECHO_SERVER], netns=bed.nodes["node-1"].netns)
        if with_prometheus:
            start_device_telemetry(bed)
    except BaseException:
        bed.close()
        raise
    return bed


# --------------------------------------------------------------------------- device layer + Prometheus

DEVICE_EXPORTER = """
import json, os, sys, time
from prometheus_client import Histogram, start_http_server
from prometheus_client.core import REGISTRY
from chaosbench.engines.mini.device import DeviceError, DeviceLayer, kmsg_line
rank, index, control_dir, port, engine_log = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
dev = DeviceLayer(rank, index, control_dir, num_blocks=100)
allreduce = Histogram("chaosbench_rank_allreduce_seconds", "all-reduce", ["rank"]).labels(rank)
class C:
    def collect(self):
        yield from dev.collect()
REGISTRY.register(C())
start_http_server(port, addr="127.0.0.1")
while True:  # a rank's step: compute (stretched by the device), then a collective that a hang blocks
    t0 = time.perf_counter()
    dev.begin_busy()
    try:
        dev.poll()
        c0 = time.perf_counter()
        sum(i * i for i in range(300000))  # ~20 ms: a draw well above a 200 W cap
        dev.throttle(time.perf_counter() - c0)
        while dev.refresh().collective_hang:
            time.sleep(0.05)
        allreduce.observe(0.001)
    except DeviceError as e:  # logged as the engine logs a failed rank (the XID line verify reads)
        with open(engine_log, "a") as fh:
            fh.write(json.dumps({"time": time.time(), "component": rank, "level": "ERROR",
                                 "message": kmsg_line(rank, e.xid, os.getpid())}) + "\\n")
    dev.record_busy(time.perf_counter() - t0)
    time.sleep(0.01)
"""


def start_device_telemetry(bed: FaultBed) -> None:
    """The engine's device layer per rank (the real class, polling the control files) + a real Prometheus."""
    targets = []
    env_py = [sys.executable, "-c", DEVICE_EXPORTER]
    for rank in bed.ranks:
        port = free_port()
        (bed.run_dir / "logs").mkdir(exist_ok=True)
        proc = subprocess.Popen([*env_py, rank, rank.split("-")[1], str(bed.control_dir), str(port),
                                 str(bed.run_dir / "logs" / "engine.jsonl")],
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        bed.pids.append(proc.pid)
        targets.append(f"127.0.0.1:{port}")
    prom_dir = bed.run_dir / "prometheus"
    prom_dir.mkdir()
    (prom_dir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: device, static_configs: [{{targets: {json.dumps(targets)}}}]}}]\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={prom_dir / 'prometheus.yml'}",
         f"--storage.tsdb.path={prom_dir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    bed.pids.append(proc.pid)
    bed.prometheus_url = f"http://127.0.0.1:{port}"
    from chaosbench.faults.mech.device import query

    deadline = time.monotonic() + 30
    while query(bed.prometheus_url, 'count(DCGM_FI_DEV_SM_CLOCK)') != len(bed.ranks):
        if time.monotonic() > deadline:
            raise RuntimeError("Prometheus never scraped the device exporters")
        time.sleep(0.2)


# --------------------------------------------------------------------------- leftovers


def snapshot(bed: FaultBed) -> dict[str, object]:
    """Everything a fault may change on the bed: compare before and after a fault."""
    from chaosbench.faults.mech import cgroups

    own = [ln.split()[0] for ln in sh("ip", "netns", "list").stdout.splitlines() if ln.startswith(bed.bridge)]
    snap: dict[str, object] = {"netns": sorted(own)}  # only this bed's: other testbeds come and go
    for node in bed.nodes.values():
        for dev, ns in ((node.veth_node, node.netns), (node.veth_host, None)):
            cmd = (["ip", "netns", "exec", ns] if ns else []) + ["tc", "qdisc", "show", "dev", dev]
            snap[f"qdisc {dev} {ns}"] = sh(*cmd).stdout.split(" refcnt")[0]
        rules = sh("ip", "netns", "exec", node.netns, "iptables-save", "-t", "filter").stdout
        snap[f"iptables {node.netns}"] = [ln for ln in rules.splitlines() if ln.startswith("-")]
        cpu, mem = Path(node.cgroups["cpu"]), Path(node.cgroups["memory"])
        snap[f"cpu quota {node.name}"] = cgroups.read(cgroups.cpu_quota_file(cpu))
        snap[f"memory limit {node.name}"] = cgroups.read(cgroups.memory_limit_file(mem))
        snap[f"procs {node.name}"] = sorted(int(p) for p in cgroups.read(cpu / "cgroup.procs").split())
    snap["root iptables"] = [ln for ln in sh("iptables-save", "-t", "filter").stdout.splitlines() if "chaosbench" in ln]
    snap["marked processes"] = _marked(bed.bridge)
    device = {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k != "seq"}
              for p in sorted(bed.control_dir.glob("*.json"))}
    snap["device"] = {k: v for k, v in device.items() if v}  # no file == empty state == the default device
    snap["rank states"] = {r.name: _state(r.pid) for r in bed.ranks.values()}
    snap["rank affinity"] = {r.name: sorted(os.sched_getaffinity(r.pid)) for r in bed.ranks.values() if r.pid}
    return snap


def _marked(prefix: str) -> list[int]:
    """Processes marked by a fault of this bed (keys start with the bed's name)."""
    from chaosbench.faults.mech.procs import MARKER_ENV

    out = []
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                if f"{MARKER_ENV}={prefix}".encode() in Path(e.path, "environ").read_bytes():
                    out.append(int(e.name))
            except OSError:
                pass
    return out


def _state(pid: int | None) -> str:
    from chaosbench.faults.mech.procs import state

    s = state(pid) if pid else None
    return "stopped" if s in ("T", "t") else "gone" if s is None else "running"


# --------------------------------------------------------------------------- steps and probes


def make_step(fault_id: str, *, node: str | None = None, rank: int | None = None, params: dict | None = None,
              timeout: str = "10s", duration: str = "30s", required: bool = True):
    from pydantic import TypeAdapter

    from chaosbench.scenario import FaultStep

    target = {"node": node} if node is not None else {"rank": rank}
    return TypeAdapter(FaultStep).validate_python({
        "id": fault_id, "target": target, "params": params or {}, "start": "0s", "duration": duration,
        "verify": {"timeout": timeout, "required": required},
    })


def cpu_rate(pid: int, window: float = 1.0) -> float:
    from chaosbench.faults.mech.procs import cpu_seconds

    before = cpu_seconds(pid)
    time.sleep(window)
    return (cpu_seconds(pid) - before) / window


def echo_rtt(ip: str, payload: int = 64, timeout: float = 10.0) -> float:
    """Seconds for one request/response of ``payload`` bytes through node-1's TCP echo server."""
    data = b"x" * payload
    with socket.create_connection((ip, 7007), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        s.sendall(data)
        got = 0
        while got < payload:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("echo server closed")
            got += len(chunk)
        return time.perf_counter() - t0


class Traffic:
    """Background echo requests to node-1 (keeps packets flowing through the link under test)."""

    def __init__(self, ip: str, payload: int = 1024, gap: float = 0.05):
        import threading

        self.ip, self.payload, self.gap = ip, payload, gap
        self.rtts: list[tuple[float, float]] = []  # (time, rtt)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.rtts.append((time.time(), echo_rtt(self.ip, self.payload, timeout=5)))
            except OSError:
                pass
            self._stop.wait(self.gap)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def wait_share(pid: int, window: float = 1.0) -> float:
    """Share of its runnable time ``pid`` spent waiting for a CPU (run-queue wait, /proc/<pid>/schedstat)."""

    def read() -> tuple[int, int]:
        run, wait, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
        return int(run), int(wait)

    r0, w0 = read()
    time.sleep(window)
    r1, w1 = read()
    return (w1 - w0) / max(1, (r1 - r0) + (w1 - w0))


def rank_share(rank_pid: int, others: list[int], window: float = 1.0) -> float:
    """The rank's share of the CPU time used by itself and ``others`` (the fault's processes) over ``window``."""
    from chaosbench.faults.mech.procs import cpu_seconds

    r0, o0 = cpu_seconds(rank_pid), sum(cpu_seconds(p) for p in others)
    time.sleep(window)
    r, o = cpu_seconds(rank_pid) - r0, sum(cpu_seconds(p) for p in others) - o0
    return r / max(1e-9, r + o)
