"""The local backend: deploy a testbed on this machine, hand it out as a ``Testbed``, tear it down.

``deploy_local`` runs preflight, writes the plan (the state file) BEFORE starting
anything, runs playbooks/local/deploy.yml (nodes, Prometheus, node-exporter, the
per-node exporter, Ray), waits for every Ray node, deploys the engine through its
``deploy(ray_address, scenario, run_dir, ...)`` and registers the engine's scrape
targets with Prometheus. ``LocalTestbed.teardown`` shuts the engine down, saves
the Ray logs, runs playbooks/local/teardown.yml and verifies nothing is left.
Any failure during deploy tears down what was started before raising.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from chaosbench.backends.base import DeviceControl, NodeInfo, RankInfo, Testbed, layout_rank
from chaosbench.backends.local import preflight
from chaosbench.backends.local.ansible import run_playbook
from chaosbench.backends.local.cleanup import Leftovers, cleanup, testbed_pids
from chaosbench.backends.local.plan import NodePlan, TestbedPlan, make_plan
from chaosbench.case import atomic_write_json
from chaosbench.errors import ChaosbenchError, PreflightFailed
from chaosbench.signals import handlers_kept

if TYPE_CHECKING:
    from chaosbench.case import CaseWriter
    from chaosbench.load.summary import RequestRecord
    from chaosbench.scenario import Scenario

RAY_NUM_CPUS = 8  # logical slots per Ray node: ranks + Serve replicas, not real cores
RAY_OBJECT_STORE_BYTES = 100 * 1024 * 1024
RAY_START_TIMEOUT_S = 150  # per Ray node; a loaded 2-core machine needs minutes


class EngineHandle(Protocol):
    api_url: str
    metrics_targets: list[tuple[str, str]]

    def rank_pids(self) -> dict[str, int]: ...

    def shutdown(self) -> None: ...


EngineDeploy = Callable[..., EngineHandle]


def ray_env(plan: TestbedPlan) -> dict[str, str]:
    from chaosbench.backends.local.ansible import REPO

    env = {
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_metrics_report_interval_ms": "1000",
        "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_timeout_ms": "2000",
        "RAY_health_check_failure_threshold": "15",
        "GLOO_SOCKET_IFNAME": "eth0" if plan.isolated else "lo",
        "PYTHONPATH": str(REPO),  # modules of the checkout outside the package (plugins under tests/)
        "CHAOSBENCH_RUN_ID": plan.run_id,
    }
    return env


def ray_nodes(plan: TestbedPlan) -> list[dict[str, Any]]:
    """One Ray node per emulated node; without isolation one Ray node carries every node's resource."""
    p = plan.ports

    def entry(node: NodePlan, names: list[str], cpus: int = RAY_NUM_CPUS, metrics: int = p.ray_metrics,
              extra: str = "") -> dict[str, Any]:
        return {"name": node.name, "ip": node.ip, "netns": node.netns or "", "ray_temp": node.ray_temp,
                "cgroup_dirs": sorted(set(node.cgroups.values())), "resources": {n: 1000 for n in names},
                "num_cpus": cpus, "metrics_port": metrics, "extra_args": extra}

    if not plan.isolated:  # everything on this machine's loopback: no Ray default port that others may hold
        extra = f"--dashboard-agent-listen-port={p.driver_agent} --dashboard-port={p.prometheus + 9}"
        return [entry(plan.nodes[0], [n.name for n in plan.nodes], extra=extra)]
    nodes = [entry(n, [n.name]) for n in plan.nodes]
    if plan.driver:  # on the host's loopback/bridge: fixed ports of its own, none of Ray's defaults
        nodes.append(entry(plan.driver, [], 0, p.driver_metrics, f"--dashboard-agent-listen-port={p.driver_agent}"))
    return nodes


def _wait_ray(plan: TestbedPlan, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    pending = [n["name"] for n in ray_nodes(plan)]
    while pending:
        for name in list(pending):
            log = plan.log_dir / f"ray-{name}.log"
            text = log.read_text(errors="replace") if log.is_file() else ""
            if "Ray runtime started" in text:
                pending.remove(name)
            elif "Traceback" in text:
                last = text.strip().splitlines()[-1]
                raise PreflightFailed(f"Ray on {name} failed to start: {last[:200]} (see {log})")
        if pending and time.monotonic() > deadline:
            raise PreflightFailed(f"Ray did not start on {', '.join(pending)} within {timeout_s:g}s (logs in {plan.log_dir})")
        time.sleep(0.3)


def _wait_targets(prom_url: str, components: set[str], timeout_s: float = 90.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    down: set[str] = set(components)
    while time.monotonic() < deadline:
        try:
            active = httpx.get(f"{prom_url}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
            up = {t["labels"].get("component") for t in active if t["health"] == "up"}
            down = components - up
            if not down:
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    raise PreflightFailed(f"Prometheus cannot scrape {', '.join(sorted(down))} within {timeout_s:g}s")


@dataclass
class LocalTestbed(Testbed):
    plan: TestbedPlan
    engine: str
    control_dir: Path
    trace_dir: Path
    api_url: str = ""
    handle: EngineHandle | None = None
    ranks: dict[str, RankInfo] = field(default_factory=dict)
    backend: str = "local"
    reusable: bool = True  # fault_residue sees every trace a local fault leaves
    teardown_leftovers: Leftovers | None = None
    run_dir: Path = field(init=False)  # the rest follows from the plan
    prometheus_url: str = field(init=False)
    nodes: dict[str, NodeInfo] = field(init=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.plan.run_dir)
        self.prometheus_url = f"http://127.0.0.1:{self.plan.ports.prometheus}"
        self.nodes = {n.name: NodeInfo(name=n.name, ip=n.ip, netns=n.netns, veth_host=n.veth_host,
                                       veth_node=n.veth_node, cgroups=dict(n.cgroups)) for n in self.plan.nodes}

    def device(self, rank: str) -> DeviceControl:
        return DeviceControl(self.control_dir, rank)

    def node_pids(self, node: str) -> list[int]:
        from chaosbench.backends.local.cleanup import cgroup_pids, netns_pids

        plan_node = next((n for n in self.plan.nodes if n.name == node), None)
        if plan_node is None:
            raise KeyError(f"no node {node!r}")
        if not self.plan.isolated:
            return sorted(testbed_pids(self.plan))  # one shared process set on loopback
        pids: set[int] = set()
        for d in plan_node.cgroups.values():
            pids |= cgroup_pids(d)
        if plan_node.netns:
            pids |= netns_pids(plan_node.netns)
        return sorted(pids)

    def rank_pid(self, rank: str) -> int:
        if self.handle is None:
            raise KeyError(f"{rank}: no engine deployed")
        return int(self.handle.rank_pids()[rank])

    def register_targets(self, targets: list[tuple[str, str]]) -> None:
        sd = [{"targets": [addr], "labels": {"component": comp}} for comp, addr in targets]
        atomic_write_json(self.run_dir / "prometheus" / "targets" / "engine.json", sd)

    # --------------------------------------------------------------- between cases
    def fault_residue(self, case_id: str) -> list[str]:
        """What the faults of case ``case_id`` left behind (empty: every rollback held)."""
        from chaosbench.backends.local.residue import fault_residue

        return fault_residue(self.plan, self.control_dir, case_id)

    def new_case(self) -> None:
        """Before a case on a reused testbed: no trace file of the previous case may be taken for this one's."""
        for f in self.trace_dir.glob("rank-*.json*"):
            f.unlink(missing_ok=True)

    # --------------------------------------------------------------- collect
    def collect_case(self, writer: CaseWriter, scenario: Scenario, t0: float, t_end: float,
                     requests: list[RequestRecord], case_start: float) -> None:
        """data.csv from this testbed's Prometheus, logs.csv from the engine's and Ray's logs, the ranks' traces."""
        from chaosbench.collect.logs import export_logs_csv
        from chaosbench.collect.prometheus import Column, export_data_csv

        extra = [Column(m.name, f"sum({m.query})", "gauge", component=m.component)
                 for m in scenario.spec.telemetry.extra_metrics]
        report = export_data_csv(self.prometheus_url, t0, t_end, writer.path / "data.csv",
                                 step=scenario.spec.telemetry.step, requests=requests, extra=extra,
                                 health_path=writer.labels_path / "testbed_health.csv")
        writer.event("collect.metrics", "point", detail={"rows": report.rows, "columns": report.columns,
                                                          "filled_cells": report.filled_cells,
                                                          "dropped_columns": list(report.dropped_columns)})
        pid_rank = {r.pid: name for name, r in self.ranks.items() if r.pid}
        if self.handle is not None:
            try:
                pid_rank.update({pid: name for name, pid in self.handle.rank_pids().items()})
            except Exception:  # noqa: BLE001 - a dead engine still leaves its logs
                pass
        ray_nodes = self.plan.nodes if self.plan.isolated else self.plan.nodes[:1]  # no namespaces: one Ray node
        ray_dirs = {n.name: Path(n.ray_temp) / "session_latest" / "logs" for n in ray_nodes}
        n = export_logs_csv(writer.path / "logs.csv", engine_log=self.run_dir / "logs" / "engine.jsonl",
                            ray_log_dirs=ray_dirs, pid_rank=pid_rank, start=max(t0 - 60, case_start), end=time.time())
        writer.event("collect.logs", "point", detail={"lines": n})
        for f in sorted(self.trace_dir.glob("rank-*.json*")):
            shutil.copy2(f, writer.path / "traces" / f.name)

    # --------------------------------------------------------------- teardown
    def save_ray_logs(self) -> Path:
        dest = self.run_dir / "logs" / "ray"
        for node in self.plan.nodes:
            src = Path(node.ray_temp) / "session_latest" / "logs"
            if src.is_dir() and not (dest / node.name).exists():
                shutil.copytree(src, dest / node.name, ignore=shutil.ignore_patterns("*.sock", "events"),
                                dirs_exist_ok=True, ignore_dangling_symlinks=True)
        return dest

    def teardown(self) -> Leftovers:
        """Always completes: engine shutdown and playbook errors are recorded, then the Python cleanup runs."""
        errors: list[str] = []
        if self.handle is not None:
            try:
                self.handle.shutdown()
            except Exception as exc:  # noqa: BLE001 - teardown must go on
                errors.append(f"engine shutdown: {exc}")
            self.handle = None
        try:
            disconnect_ray()
        except Exception as exc:  # noqa: BLE001 - teardown must go on
            errors.append(f"ray disconnect: {exc}")
        try:
            self.save_ray_logs()
        except OSError as exc:
            errors.append(f"saving Ray logs: {exc}")
        try:
            run_playbook("teardown.yml", {"testbed": self.plan.to_json()}, self.run_dir / "ansible" / "teardown")
        except ChaosbenchError as exc:
            errors.append(str(exc))
        self.teardown_leftovers = cleanup(self.plan, grace_s=3.0)
        if errors:
            (self.run_dir / "logs" / "teardown-errors.txt").write_text("\n".join(errors) + "\n")
        return self.teardown_leftovers


def _resolve_engine(name: str) -> EngineDeploy:
    from chaosbench.engines import ENGINES

    return ENGINES.get(name)  # type: ignore[no-any-return]


def start_infra(run_dir: Path, n_nodes: int, *, isolated: bool | None = None, fault_ids: list[str] | None = None,
                run_id: str | None = None, with_ray: bool = True) -> TestbedPlan:
    """Preflight, write the state file, run the deploy playbook and wait for Ray. Cleans up on failure."""
    isolated = preflight.is_root() if isolated is None else isolated
    preflight.check_binaries(isolated)
    preflight.check_faults(list(fault_ids or []), isolated)
    plan = make_plan(run_dir, n_nodes, isolated=isolated, run_id=run_id)
    preflight.check_ports(plan.ports, isolated, plan.head.ip)
    Path(plan.run_dir).mkdir(parents=True, exist_ok=True)
    plan.write()  # before anything starts: `chaosbench cleanup` works from here on
    cgroup_dirs = sorted({d for n in (*plan.nodes, *([plan.driver] if plan.driver else [])) for d in n.cgroups.values()})
    extravars = {"testbed": plan.to_json(), "ray_env": ray_env(plan), "ray_nodes": ray_nodes(plan),
                 "cgroup_dirs": cgroup_dirs, "with_ray": with_ray,
                 "ray_bin": str(Path(plan.python).parent / "ray"), "ray_num_cpus": RAY_NUM_CPUS,
                 "ray_object_store_bytes": RAY_OBJECT_STORE_BYTES, "ray_start_timeout_s": RAY_START_TIMEOUT_S,
                 "prometheus_bin": preflight.PROMETHEUS_BIN, "node_exporter_bin": preflight.NODE_EXPORTER_BIN}
    try:
        run_playbook("deploy.yml", extravars, Path(plan.run_dir) / "ansible" / "deploy")
        if with_ray:
            _wait_ray(plan)
    except BaseException:
        cleanup(plan, grace_s=3.0)
        raise
    return plan


def ray_address(plan: TestbedPlan) -> str:
    return f"{plan.head.ip}:{plan.ports.ray_gcs}"


def connect_ray(plan: TestbedPlan) -> None:
    """Connect this process to the testbed's Ray cluster through the host-side driver node."""
    import os

    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray

    if ray.is_initialized():
        ray.shutdown()
    node_ip = plan.driver.ip if plan.driver else plan.head.ip
    with handlers_kept():  # ray.init installs a SIGTERM handler that exits without our teardown
        ray.init(address=ray_address(plan), _node_ip_address=node_ip, log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=False)


def disconnect_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def deploy_local(scenario: Scenario, run_dir: Path, *, engine_deploy: EngineDeploy | None = None,
                 isolated: bool | None = None, run_id: str | None = None) -> LocalTestbed:
    """Deploy the whole testbed for ``scenario`` (chaosbench.scenario.Scenario) under ``run_dir``."""
    dep = scenario.spec.deployment
    fault_ids = [f.id for f in scenario.spec.faults]
    plan = start_infra(Path(run_dir), dep.topology.nodes, isolated=isolated, fault_ids=fault_ids, run_id=run_id)
    tb = LocalTestbed(plan=plan, engine=dep.engine, control_dir=Path(plan.run_dir) / "control",
                      trace_dir=Path(plan.run_dir) / "traces")
    tb.control_dir.mkdir(exist_ok=True)
    tb.trace_dir.mkdir(exist_ok=True)
    try:
        deploy = engine_deploy or _resolve_engine(dep.engine)
        try:
            connect_ray(plan)
            handle = deploy(ray_address(plan), scenario, Path(plan.run_dir), trace_dir=tb.trace_dir,
                            control_dir=tb.control_dir, node_ips={n.name: n.ip for n in plan.nodes},
                            http_host=plan.head.ip, http_port=plan.ports.serve_http,
                            gloo_ifname="eth0" if plan.isolated else "lo")
        except ChaosbenchError:
            raise
        except Exception as exc:
            raise PreflightFailed(f"engine {dep.engine!r} failed to start: {type(exc).__name__}: {exc}") from exc
        tb.handle, tb.api_url = handle, handle.api_url
        tb.ranks = {r: layout_rank(dep.topology, int(r.split("-")[1]), pid=pid)
                    for r, pid in handle.rank_pids().items()}
        tb.register_targets(list(handle.metrics_targets))
        _wait_targets(tb.prometheus_url, {c for c, _ in handle.metrics_targets} | {"host"})
    except BaseException:
        tb.teardown()
        raise
    (Path(plan.run_dir) / "testbed-ready.json").write_text(json.dumps({"api_url": tb.api_url}) + "\n")
    return tb
