"""What a local testbed will consist of, decided before anything starts.

The plan names every namespace, veth, bridge, cgroup, port and pid file of one
testbed. It is written to ``<run_dir>/testbed.json`` BEFORE the deploy playbook
runs, so ``chaosbench cleanup`` can undo a crashed run from that file alone.

Names carry a short run id (``cbtb`` = chaosbench testbed) so they never clash
with another run's or another tool's: netns ``cbtb-<rid>-n<i>``, bridge
``cbtb-<rid>``, host-side veth ``cbtb<rid>n<i>`` (the node side is ``eth0``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chaosbench.case import atomic_write_json
from chaosbench.errors import InputInvalid

STATE_FILE = "testbed.json"
SUBNET_PREFIX = "10.232"  # 10.232.<k>.0/24, one free <k> per testbed
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_V1_CONTROLLERS = ("cpu", "cpuacct", "memory")
# Without namespaces the nodes live on this loopback address: Ray rewrites 127.0.0.1 (not 127.0.0.2) to the
# machine's external address, and a second loopback address keeps clear of services on 127.0.0.1.
LOOPBACK_IP = "127.0.0.2"


@dataclass(frozen=True)
class Ports:
    """Fixed ports, all outside Ray's worker range 10002-19999.

    Host-side ports (Prometheus, node-exporter, the cgroup exporter) are on
    127.0.0.1; the others live inside each node's namespace (or on loopback
    without root). ``CHAOSBENCH_PORT_BASE`` moves the host-side ones.
    """

    prometheus: int = 9390
    node_exporter: int = 9391
    exporter: int = 9392
    ray_gcs: int = 6379
    ray_client: int = 10001
    ray_metrics: int = 9393
    driver_metrics: int = 9394  # the host-side driver node's ports
    driver_agent: int = 9395
    serve_http: int = 8000

    @classmethod
    def from_env(cls) -> Ports:
        base = os.environ.get("CHAOSBENCH_PORT_BASE")
        if not base:
            return cls()
        try:
            b = int(base)
        except ValueError:
            raise InputInvalid(f"CHAOSBENCH_PORT_BASE={base!r}: not a port number") from None
        if not 1024 <= b <= 65000 or (10002 <= b + 9 and b <= 19999):
            raise InputInvalid(f"CHAOSBENCH_PORT_BASE={b}: use 1024-10000 or 20000-65000 (Ray owns 10002-19999)")
        return cls(prometheus=b, node_exporter=b + 1, exporter=b + 2, ray_metrics=b + 3, driver_metrics=b + 4,
                   driver_agent=b + 5)

    def host_ports(self, isolated: bool) -> dict[str, int]:
        """Ports that must be free on 127.0.0.1 before deploying."""
        ports = {"prometheus": self.prometheus, "node-exporter": self.node_exporter, "exporter": self.exporter}
        if isolated:
            ports.update(ray_driver_metrics=self.driver_metrics, ray_driver_agent=self.driver_agent)
        return ports

    def on_loopback(self) -> Ports:
        """Without namespaces Ray shares this machine with other Rays: no default Ray port (6379, 10001, 8000)."""
        from dataclasses import replace

        return replace(self, ray_gcs=self.prometheus + 6, ray_client=self.prometheus + 7,
                       serve_http=self.prometheus + 8)

    def node_ports(self, isolated: bool) -> dict[str, int]:
        """Ports that must be free on the nodes' address (only shared with this machine without namespaces)."""
        if isolated:
            return {}
        return {"ray_gcs": self.ray_gcs, "ray_client": self.ray_client, "ray_metrics": self.ray_metrics,
                "ray_agent": self.driver_agent, "serve_http": self.serve_http}


@dataclass(frozen=True)
class NodePlan:
    name: str
    ip: str
    netns: str | None
    veth_host: str | None
    veth_node: str | None
    cgroups: dict[str, str] = field(default_factory=dict)
    ray_temp: str = ""


@dataclass(frozen=True)
class TestbedPlan:
    run_id: str
    run_dir: str
    isolated: bool  # True: one netns + cgroup per node (root); False: one loopback node set (no root)
    cgroup_version: int  # 1, 2, or 0 when cgroups are not used
    subnet: str | None
    bridge: str | None
    bridge_ip: str | None
    nodes: tuple[NodePlan, ...]
    cgroup_run_dirs: tuple[str, ...]  # per-controller run-level dirs, removed at teardown
    ray_tmp_root: str
    ports: Ports
    driver: NodePlan | None = None  # host-side Ray node (no CPUs) on the bridge, for this process's driver
    python: str = sys.executable

    @property
    def head(self) -> NodePlan:
        return self.nodes[0]

    @property
    def pid_dir(self) -> Path:
        return Path(self.run_dir) / "pids"

    @property
    def log_dir(self) -> Path:
        return Path(self.run_dir) / "logs"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> TestbedPlan:
        nodes = tuple(NodePlan(**n) for n in obj["nodes"])
        ports = Ports(**obj["ports"])
        driver = NodePlan(**obj["driver"]) if obj.get("driver") else None
        rest = {k: v for k, v in obj.items() if k not in ("nodes", "ports", "cgroup_run_dirs", "driver")}
        return cls(nodes=nodes, ports=ports, cgroup_run_dirs=tuple(obj["cgroup_run_dirs"]), driver=driver, **rest)

    def write(self) -> Path:
        path = Path(self.run_dir) / STATE_FILE
        atomic_write_json(path, self.to_json())
        return path


def read_plan(path: Path) -> TestbedPlan:
    path = Path(path)
    state = path / STATE_FILE if path.is_dir() else path
    try:
        return TestbedPlan.from_json(json.loads(state.read_text()))
    except FileNotFoundError:
        raise InputInvalid(f"{state}: no testbed state file") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputInvalid(f"{state}: not a testbed state file ({exc})") from None


def cgroup_version() -> int:
    if (CGROUP_ROOT / "cgroup.controllers").is_file():
        return 2
    if (CGROUP_ROOT / "cpu").is_dir() and (CGROUP_ROOT / "memory").is_dir():
        return 1
    return 0


def free_subnet_index() -> int:
    """A random 10.232.<k>.0/24 that no interface of this machine uses (random: testbeds started at the same
    moment by other runs must not pick the same one; the deploy playbook also checks the route is unique)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False).stdout
    used = {int(m) for m in re.findall(rf"inet {re.escape(SUBNET_PREFIX)}\.(\d+)\.", out)}
    free = [k for k in range(1, 255) if k not in used]
    if not free:
        raise InputInvalid(f"no free {SUBNET_PREFIX}.<k>.0/24 subnet left on this machine")
    return secrets.choice(free)


def _node_cgroups(version: int, run_id: str, node: str) -> dict[str, str]:
    if version == 1:
        return {c: str(CGROUP_ROOT / c / "chaosbench" / run_id / node) for c in CGROUP_V1_CONTROLLERS}
    if version == 2:
        d = str(CGROUP_ROOT / "chaosbench" / run_id / node)
        return {"cpu": d, "memory": d}
    return {}


def make_plan(run_dir: Path, n_nodes: int, *, isolated: bool, ports: Ports | None = None,
              run_id: str | None = None) -> TestbedPlan:
    rid = run_id or secrets.token_hex(3)
    ports = ports or Ports.from_env()
    if not isolated:
        ports = ports.on_loopback()
    version = cgroup_version() if isolated else 0
    ray_tmp = f"/tmp/cbtb-{rid}"  # short: Ray's unix socket paths must stay under 107 bytes
    nodes: list[NodePlan] = []
    if isolated:
        k = free_subnet_index()
        subnet, bridge_ip = f"{SUBNET_PREFIX}.{k}.0/24", f"{SUBNET_PREFIX}.{k}.1"
        for i in range(n_nodes):
            name = f"node-{i}"
            nodes.append(NodePlan(name=name, ip=f"{SUBNET_PREFIX}.{k}.{i + 2}", netns=f"cbtb-{rid}-n{i}",
                                  veth_host=f"cbtb{rid}n{i}", veth_node="eth0",
                                  cgroups=_node_cgroups(version, rid, name), ray_temp=f"{ray_tmp}/n{i}"))
        bridge: str | None = f"cbtb-{rid}"
        # The harness process is outside every namespace: a CPU-less Ray node on the bridge gives its Ray
        # driver a local raylet (Ray Client proved unreliable here).
        driver: NodePlan | None = NodePlan(name="driver", ip=bridge_ip, netns=None, veth_host=None, veth_node=None,
                                           cgroups=_node_cgroups(version, rid, "driver"), ray_temp=f"{ray_tmp}/drv")
    else:
        driver = None
        subnet = bridge = bridge_ip = None
        nodes = [NodePlan(name=f"node-{i}", ip=LOOPBACK_IP, netns=None, veth_host=None, veth_node=None,
                          ray_temp=f"{ray_tmp}/n0") for i in range(n_nodes)]
    if version == 1:
        run_dirs = tuple(str(CGROUP_ROOT / c / "chaosbench" / rid) for c in CGROUP_V1_CONTROLLERS)
    elif version == 2:
        run_dirs = (str(CGROUP_ROOT / "chaosbench" / rid),)
    else:
        run_dirs = ()
    return TestbedPlan(run_id=rid, run_dir=str(Path(run_dir).resolve()), isolated=isolated, cgroup_version=version,
                       subnet=subnet, bridge=bridge, bridge_ip=bridge_ip, nodes=tuple(nodes),
                       cgroup_run_dirs=run_dirs, ray_tmp_root=ray_tmp, ports=ports, driver=driver)
