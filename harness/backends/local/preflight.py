"""Checks before the local testbed starts anything: binaries, free ports, root."""

from __future__ import annotations

import os
import shutil
import socket

from chaosbench.backends.local.plan import Ports
from chaosbench.errors import PreflightFailed
from chaosbench.faults.catalog import fault_specs, get_fault

PROMETHEUS_BIN = os.environ.get("CHAOSBENCH_PROMETHEUS", "/usr/bin/prometheus")
NODE_EXPORTER_BIN = os.environ.get("CHAOSBENCH_NODE_EXPORTER", "/usr/bin/prometheus-node-exporter")

def root_only_faults() -> dict[str, str]:
    """Fault id -> why its local mechanism needs per-node namespaces, cgroups, qdiscs or iptables (root only):
    ``FaultSpec.needs_root`` of every fault, shipped or plugin."""
    return {spec.id: spec.needs_root for spec in fault_specs() if spec.needs_root}


def is_root() -> bool:
    return os.geteuid() == 0


def no_root_message() -> str:
    listed = ", ".join(f"{f} ({why})" for f, why in root_only_faults().items())
    return ("not running as root: the local testbed runs on loopback without per-node namespaces or cgroups; "
            f"faults that need root: {listed}")


def check_binaries(isolated: bool) -> None:
    missing = [b for b in (PROMETHEUS_BIN, NODE_EXPORTER_BIN) if not (shutil.which(b) or os.access(b, os.X_OK))]
    if isolated and not shutil.which("ip"):
        missing.append("ip (iproute2)")
    if missing:
        raise PreflightFailed(
            f"missing {', '.join(missing)}: install with `apt-get install -y --no-install-recommends "
            "prometheus prometheus-node-exporter iproute2` (or set CHAOSBENCH_PROMETHEUS / CHAOSBENCH_NODE_EXPORTER)"
        )


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(ports: Ports, isolated: bool, node_ip: str = "127.0.0.2") -> None:
    busy = [f"{name} {port}" for name, port in ports.host_ports(isolated).items() if port_in_use(port)]
    # Ray's GCS binds every address: the nodes' ports must be free on all of them
    busy += [f"{name} {port}" for name, port in ports.node_ports(isolated).items()
             if port_in_use(port, node_ip) or port_in_use(port, "0.0.0.0")]
    if busy:
        raise PreflightFailed(
            f"port already in use on 127.0.0.1: {', '.join(busy)} (another testbed running? "
            "`chaosbench cleanup` stops a leftover one; CHAOSBENCH_PORT_BASE moves the host ports)"
        )


def check_faults(fault_ids: list[str], isolated: bool) -> None:
    if isolated:
        return
    blocked = [f for f in fault_ids if get_fault(f).needs_root]
    if blocked:
        raise PreflightFailed(f"{', '.join(blocked)} cannot run: {no_root_message()}")
