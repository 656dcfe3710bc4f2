"""What a deployed testbed tells the rest of the harness (faults, load, collectors).

A backend's ``deploy`` returns a ``Testbed``; fault injectors, the load driver and
the collectors only use this interface, so they work the same on every backend
that can provide it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.case import atomic_write_json


@dataclass(frozen=True)
class NodeInfo:
    name: str  # node-0, node-1, ... as in telemetry
    ip: str  # the node's address (inside its namespace on the local backend)
    netns: str | None = None  # network namespace, local backend only
    veth_host: str | None = None  # bridge-side port of the node's veth (shapes ingress to the node)
    veth_node: str | None = None  # node-side interface inside the namespace (shapes egress)
    cgroups: dict[str, str] = field(default_factory=dict)  # controller -> cgroup dir holding the node's processes
    cpus: tuple[int, ...] = ()  # cores the node's processes are pinned to (empty = all)


@dataclass(frozen=True)
class RankInfo:
    name: str  # rank-0, rank-1, ...
    index: int
    node: str  # node name the rank runs on
    pid: int | None = None  # OS pid of the rank's worker process


class DeviceControl:
    """The per-rank emulated device layer's control file (mini engine).

    The rank's device layer polls ``<control_dir>/<rank>.json`` (by mtime) once per
    engine step and applies it; fields: ``power_limit_w``, ``sm_clock_mhz``,
    ``mem_pool_fraction`` (share of the pool taken away), ``xid`` (raise a device
    error once per new ``seq``). An empty object means the default device.
    """

    def __init__(self, control_dir: Path, rank: str):
        self.path = Path(control_dir) / f"{rank}.json"

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def set(self, **fields: Any) -> None:
        state = {**self.read(), **fields}
        state["seq"] = int(state.get("seq", 0)) + 1
        atomic_write_json(self.path, state)

    def reset(self) -> None:
        seq = int(self.read().get("seq", 0)) + 1
        atomic_write_json(self.path, {"seq": seq})


class Testbed(Protocol):
    """A running system under test."""

    backend: str
    engine: str
    run_dir: Path
    nodes: dict[str, NodeInfo]
    ranks: dict[str, RankInfo]
    api_url: str  # OpenAI-compatible base URL (e.g. http://10.232.0.2:8000)
    prometheus_url: str  # e.g. http://127.0.0.1:9090

    def device(self, rank: str) -> DeviceControl: ...

    def node_pids(self, node: str) -> list[int]:
        """PIDs of every process of the system under test running on ``node``."""
        ...

    def rank_pid(self, rank: str) -> int:
        """Current PID of the rank's worker process (it can change after a restart)."""
        ...
