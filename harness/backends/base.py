"""The backend contract: what a deployed testbed offers the run pipeline, declared once.

A backend is one ``Backend`` (below): its ``deploy(scenario, run_dir, **kw) -> Testbed`` and what the harness must
know before a testbed exists (root, dry run, journal replay, which fault mechanisms apply). It is registered once,
in chaosbench.backends (shipped) or under the entry-point group ``chaosbench.backends`` (a plugin). The
runner and the fault lifecycle use a testbed only through ``Testbed`` below; a backend class subclasses it,
implements the abstract members (those that raise NotImplementedError) and overrides the defaults that do not suit
it. The defaults fit a testbed whose engine this machine can reach (the local backend): the local fault
modules, Locust in a process here, the engine's own /start_profile and /stop_profile, PromQL unchanged.
The runner checks a deployed testbed against this contract (``check_testbed``) before using it.

When the runner calls what (one case):

    deploy -> new_case() -> start_load(config, load_dir) -> promql(q) for the probes and stop conditions
    -> injector(fault_id) per fault (chaosbench.faults.lifecycle) -> start_profile()/stop_profile() at the trace
    windows -> collect_case(writer, scenario, ...) -> [reusable: fault_residue(case_id) before the next case]
    -> teardown()
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from chaosbench.case import atomic_write_json
from chaosbench.errors import PluginInvalid

if TYPE_CHECKING:
    from chaosbench.case import CaseWriter
    from chaosbench.faults.base import Injector
    from chaosbench.load.driver import LoadConfig
    from chaosbench.load.summary import RequestRecord
    from chaosbench.scenario import Scenario, TopologySpec

PROFILE_TIMEOUT_S = 300  # the engine writes every rank's trace before /stop_profile answers


@dataclass(frozen=True)
class Backend:
    """A backend's one registration. Functions are ``"module:function"`` references, imported when used."""

    name: str  # deployment.backend in a scenario, --backend on the command line
    deploy: str  # (scenario, run_dir, **kw) -> Testbed; leaves nothing behind when it fails
    # which half of a FaultSpec applies: "local" (local_mechanism, local_realism: this machine's mechanisms and
    # the emulated device layer) or "cluster" (cluster_mechanism, real hardware)
    fault_site: Literal["local", "cluster"]
    needs_root: bool = False  # its fault mechanisms need root on this machine (the CLI warns without it)
    dry_run: str | None = None  # (scenario, out_dir) -> Path: render everything, touch nothing (--dry-run)
    # (journal handle) -> None: roll back a fault journalled by a harness that died; None: the fault's own
    # module's recover(handle)
    recover: str | None = None


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
    replica: int = 0  # data-parallel replica (chaosbench.layout)
    stage: int = 0  # pipeline stage within the replica


def layout_rank(topology: TopologySpec, index: int, node: str | None = None, pid: int | None = None) -> RankInfo:
    """Rank ``index`` with its replica and stage from the scenario's layout; its node as the backend placed it
    (default: the layout's contiguous blocks)."""
    place = topology.grid.coord(index)
    return RankInfo(name=f"rank-{index}", index=index, node=node or topology.rank_node(index), pid=pid,
                    replica=place.replica, stage=place.stage)


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


class LoadRun(Protocol):
    """A running load (chaosbench.load.driver.LoadRun: Locust here; the k8s backend's Locust Job)."""

    def wait_started(self, timeout_s: float = ...) -> float:
        """Unix time the load began."""
        ...

    def stop(self, grace_s: float = ...) -> None: ...

    def finish(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for the end (stop after ``timeout_s``); write requests.jsonl, Locust CSVs, summary.json to the
        load dir and return the summary (``requests``, ``errors``, ``throughput_rps``, ``goodput_rps``, ...)."""
        ...


class Leftovers(Protocol):
    """What a teardown could not remove."""

    def describe(self) -> str:
        """One line; "nothing" when everything is gone."""
        ...


@dataclass(frozen=True)
class Left:
    """Leftovers as lines (a backend that only knows what failed)."""

    items: tuple[str, ...] = ()

    def describe(self) -> str:
        return "; ".join(self.items) or "nothing"


@runtime_checkable
class Testbed(Protocol):
    """A running system under test. Subclass it and implement the members that raise NotImplementedError."""

    backend: str  # the BACKENDS name: local, k8s
    engine: str  # the engine that serves (the k8s backend always serves vLLM, whatever the scenario says)
    run_dir: Path  # the testbed's own files: logs, load records (load/<case_id>/), state
    nodes: dict[str, NodeInfo]
    ranks: dict[str, RankInfo]
    api_url: str  # OpenAI-compatible base URL (e.g. http://10.232.0.2:8000)
    prometheus_url: str  # e.g. http://127.0.0.1:9090
    reusable: bool = False  # True: consecutive cases may share it (``fault_residue`` must then tell the truth)

    # ---------------------------------------------------------------- what the local fault modules reach
    def device(self, rank: str) -> DeviceControl:
        """The rank's emulated device layer (a backend without one raises PreflightFailed)."""
        raise NotImplementedError

    def node_pids(self, node: str) -> list[int]:
        """PIDs of every process of the system under test running on ``node``."""
        raise NotImplementedError

    def rank_pid(self, rank: str) -> int:
        """Current PID of the rank's worker process (it can change after a restart)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- what the runner calls
    def injector(self, fault_id: str) -> Injector:
        """The fault's injector on this backend (chaosbench.faults.base.Injector); default: the local module, rank by
        rank on a replica or a stage (chaosbench.faults.targets.fan_out)."""
        from chaosbench.faults.base import injector
        from chaosbench.faults.targets import fan_out

        return fan_out(injector(fault_id))

    def promql(self, query: str) -> str:
        """A scenario's PromQL (probes, stop conditions) in this backend's metric names; default: unchanged."""
        return query

    def start_load(self, config: LoadConfig, load_dir: Path) -> LoadRun:
        """Start the load (records go to ``load_dir``); default: Locust in a process of this machine."""
        from chaosbench.load.driver import start_load

        return start_load(config, load_dir)

    def start_profile(self) -> None:
        """Start the engine's trace window; default: the engine's ``/start_profile``."""
        self._post("/start_profile")

    def stop_profile(self) -> None:
        """End the trace window; the traces are written by the time it returns. Default: ``/stop_profile``."""
        self._post("/stop_profile")

    def _post(self, path: str) -> None:
        import httpx

        httpx.post(f"{self.api_url}{path}", timeout=PROFILE_TIMEOUT_S).raise_for_status()

    def new_case(self) -> None:
        """Before each case: forget what belongs to the previous one (e.g. its trace files). Default: nothing."""
        return

    def collect_case(self, writer: CaseWriter, scenario: Scenario, t0: float, t_end: float,
                     requests: list[RequestRecord], case_start: float) -> None:
        """Write the blind case's data.csv, logs.csv and traces/ for the load window [t0, t_end] (logs from
        ``case_start`` on) into ``writer.path``; journal what was collected (``writer.event``, stages
        ``collect.*``). The runner has already copied the load records."""
        raise NotImplementedError

    def fault_residue(self, case_id: str) -> list[str]:
        """What the faults of case ``case_id`` left behind, one line each (empty: every rollback held).
        Asked only of a ``reusable`` testbed, before it takes the next case."""
        return []

    def teardown(self) -> Leftovers:
        """Remove everything deploy made; always completes; says what could not be removed."""
        raise NotImplementedError


def check_testbed(backend: str, testbed: object) -> Testbed:
    """The deployed ``testbed`` if it satisfies the contract, else PluginInvalid naming what it lacks."""
    if isinstance(testbed, Testbed):
        return testbed
    wanted = sorted({m for m in (*Testbed.__annotations__, *vars(Testbed)) if not m.startswith("_")})
    missing = [m for m in wanted if not hasattr(testbed, m)]
    raise PluginInvalid(f"backend {backend!r} returned a {type(testbed).__name__} that lacks "
                        f"{', '.join(missing) or 'nothing'} of chaosbench.backends.base.Testbed")
