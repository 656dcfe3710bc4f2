"""The k8s backend at run time: render, deploy through ansible-runner, hand out a Testbed, tear down.

``deploy_k8s(scenario, run_dir)`` renders ``<run_dir>/k8s`` (as ``--dry-run`` does),
runs playbooks/k8s/deploy.yml (site.yml with ``install=True``: k3s/operators too)
through ansible-runner, waits for the RayService with the Kubernetes client and
returns a ``K8sTestbed``. It overrides the Testbed contract's defaults (chaosbench.backends.base) with what a
cluster needs, where nothing runs on this machine: ``injector(fault_id)`` (Chaos Mesh and the fault agent),
``start_load(config, load_dir)`` (the Locust Job), ``start_profile()``/``stop_profile()`` (vLLM's profiler
through the Ray head), ``collect_case(...)`` and ``promql(query)`` (the scenario's PromQL with the cluster's
metric names). It is not reusable across cases: each case gets a fresh deployment.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from chaosbench.backends.base import DeviceControl, Left, NodeInfo, RankInfo, Testbed, layout_rank
from chaosbench.backends.k8s import collect
from chaosbench.backends.k8s.client import K8sClient
from chaosbench.backends.k8s.faults import FaultAction, locate_command, plan_faults
from chaosbench.backends.k8s.injectors import K8sInjector
from chaosbench.backends.k8s.placement import Placement, from_located
from chaosbench.backends.k8s.settings import MIN_RAY, MIN_VLLM, K8sSettings, image_ray_version, version_tuple
from chaosbench.case import atomic_write_json, atomic_write_text
from chaosbench.errors import PreflightFailed

if TYPE_CHECKING:
    from chaosbench.case import CaseWriter
    from chaosbench.load.driver import LoadConfig
    from chaosbench.load.summary import RequestRecord
    from chaosbench.scenario import Scenario

DEFAULT_PROMETHEUS = "http://127.0.0.1:9090"  # kubectl -n monitoring port-forward svc/...-prometheus 9090
LOAD_OUT = "/out"
LOAD_FILES = ("requests.jsonl", "started.json", "exit_code", "locust.log", "locust_stats.csv",
              "locust_stats_history.csv", "locust_failures.csv", "locust_exceptions.csv")
PlaybookRunner = Callable[[str, dict[str, Any], Path, Path | None], None]


def run_playbook(name: str, extravars: dict[str, Any], private_dir: Path, inventory: Path | None = None) -> None:
    """Run ``playbooks/k8s/<name>`` through ansible-runner (chaosbench.backends.local.ansible.play)."""
    from chaosbench.backends.local.ansible import PLAYBOOKS, play

    play(PLAYBOOKS / "k8s" / name, extravars, private_dir, str(inventory) if inventory else None, rotate_artifacts=3)


@dataclass
class K8sLoadRun:
    """The Locust Job, seen like chaosbench.load.driver.LoadRun (wait_started, stop, finish)."""

    client: K8sClient
    job: str
    out_dir: Path
    slo: dict[str, float]
    sleep: Callable[[float], None] = time.sleep
    started_at: float | None = None

    def _pod(self) -> str:
        pods = self.client.pods(f"job-name={self.job}")
        if not pods:
            raise PreflightFailed(f"Locust Job {self.job}: no pod")
        return pods[-1].name

    def _read(self, name: str) -> str | None:
        res = self.client.exec(self._pod(), ["sh", "-c", f"test -f {LOAD_OUT}/{name} && base64 -w0 {LOAD_OUT}/{name}"])
        return base64.b64decode(res.stdout).decode(errors="replace") if res.rc == 0 else None

    def wait_started(self, timeout_s: float = 600.0) -> float:
        deadline = time.monotonic() + timeout_s
        while (text := self._read("started.json")) is None:
            if time.monotonic() > deadline:
                raise PreflightFailed(f"Locust Job {self.job} did not start within {timeout_s:g}s")
            self.sleep(2.0)
        self.started_at = float(json.loads(text)["started_at"])
        return self.started_at

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM to Locust in the pod (it then writes its CSVs); the pod stays for collection."""
        self.client.exec(self._pod(), ["sh", "-c", f"kill -TERM $(cat {LOAD_OUT}/locust.pid) 2>/dev/null || true"])

    def finish(self, timeout_s: float | None = None) -> dict[str, Any]:
        from chaosbench.load.summary import read_requests, summarize

        deadline = time.monotonic() + (timeout_s if timeout_s is not None else 3600)
        while self._read("exit_code") is None:
            if time.monotonic() > deadline:
                self.stop()
                break
            self.sleep(2.0)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name in LOAD_FILES:
            text = self._read(name)
            if text is not None:
                (self.out_dir / name).write_text(text)
        (self.out_dir / "requests.jsonl").touch()
        summary = summarize(read_requests(self.out_dir / "requests.jsonl"), self.slo, self.started_at)
        atomic_write_json(self.out_dir / "summary.json", summary)
        return summary


@dataclass
class K8sTestbed(Testbed):
    settings: K8sSettings
    client: K8sClient
    run_dir: Path
    k8s_dir: Path
    node_map: dict[str, str]
    actions: list[FaultAction]
    prometheus_url: str
    placement: Placement
    worker_pods: dict[str, list[str]] = field(default_factory=dict)
    playbook: PlaybookRunner = run_playbook
    inventory: Path | None = None
    backend: str = "k8s"
    engine: str = "vllm"
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    ranks: dict[str, RankInfo] = field(default_factory=dict)
    api_url: str = field(init=False)  # in-cluster: the Locust Job reaches it, this machine need not

    def __post_init__(self) -> None:
        s = self.settings
        self.api_url = s.api_url
        # NodeInfo.ip carries the Kubernetes node name: addresses are the cluster's business.
        self.nodes = {n: NodeInfo(name=n, ip=self.node_map.get(n, "")) for n in s.node_names}
        self.ranks = {f"rank-{r}": layout_rank(s.topology(), r, node=self.placement.node(r))
                      for r in range(s.world_size)}

    # -- the Testbed contract's local-only parts ------------------------------------------------------------
    def device(self, rank: str) -> DeviceControl:
        raise PreflightFailed("the k8s backend has real GPUs: no emulated device layer")

    def node_pids(self, node: str) -> list[int]:
        raise PreflightFailed("processes on a cluster are reached through the fault agent, not by pid")

    def rank_pid(self, rank: str) -> int:
        raise PreflightFailed("processes on a cluster are reached through the fault agent, not by pid")

    # -- what the run pipeline uses on a cluster --------------------------------------------------------------
    def injector(self, fault_id: str) -> K8sInjector:
        return K8sInjector(fault_id, self.client, self.actions, self.settings.kubeconfig)

    def start_load(self, config: LoadConfig, load_dir: Path) -> K8sLoadRun:
        """Drop-in for chaosbench.load.driver.start_load: the rendered Locust Job (``config`` gives the SLOs;
        the Job's own copy of the LoadConfig was rendered from the same scenario)."""
        self.playbook("deploy.yml", {**self._vars(), "cb_start_load": True}, self.run_dir / "ansible", self.inventory)
        return K8sLoadRun(self.client, f"{self.settings.name}-locust", Path(load_dir), dict(config.slo))

    def promql(self, query: str) -> str:
        """The scenario's PromQL (probes, stop conditions) with the cluster's metric names."""
        return collect.cluster_promql(self.settings, query)

    def _profile(self, action: str) -> dict[str, Any]:
        head = [p for p in self.client.pods("chaosbench.io/role=head") if p.phase == "Running"]
        if not head:
            raise PreflightFailed("no running Ray head pod")
        res = self.client.exec(head[0].name, ["python", "/opt/chaosbench/profile_window.py", action], timeout_s=900)
        answer = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {}
        if res.rc != 0 or "error" in answer:
            raise PreflightFailed(f"profiler {action}: {answer.get('error') or res.stderr.strip() or res.rc}")
        return answer

    def start_profile(self) -> None:
        self._profile("start")

    def stop_profile(self) -> None:
        self._profile("stop")

    def collect_case(self, writer: CaseWriter, scenario: Scenario, t0: float, t_end: float,
                     requests: list[RequestRecord], case_start: float) -> None:
        """data.csv, logs.csv and traces/ of the case from the cluster (pod logs from a minute before the load)."""
        case_dir = writer.path
        queries = collect.column_queries(self.settings, scenario)
        view = collect.ClusterView(self.node_map, self.worker_pods, self.placement)
        cols = collect.export_data_csv(self.prometheus_url, self.settings, queries, view, t0, t_end,
                                       case_dir / "data.csv", requests)
        lines = collect.export_logs_csv(self.client, t0 - 60, time.time(), case_dir / "logs.csv")
        traces = collect.collect_traces(self.client, self.settings, case_dir / "traces")
        writer.event("collect.backend", "point", detail={"columns": cols, "log_lines": lines, "traces": len(traces)})

    def _vars(self) -> dict[str, Any]:
        return {**yaml.safe_load((self.k8s_dir / "vars.yml").read_text()), "cb_node_map": self.node_map}

    def teardown(self) -> Left:
        """Delete the run's objects (faults first); says what could not be removed."""
        try:
            self.playbook("teardown.yml", self._vars(), self.run_dir / "ansible", self.inventory)
        except PreflightFailed as exc:
            return Left((str(exc),))
        return Left()


def deploy_k8s(scenario: Scenario, run_dir: Path, *, prometheus_url: str | None = None, inventory: Path | None = None,
               install: bool = False, client: K8sClient | None = None,
               playbook: PlaybookRunner = run_playbook) -> K8sTestbed:
    """Render, deploy (site.yml with ``install``, else deploy.yml), wait until vLLM serves; a K8sTestbed."""
    from chaosbench.backends.k8s import dry_run
    from chaosbench.backends.k8s.settings import from_scenario

    run_dir = Path(run_dir)
    k8s_dir = dry_run(scenario, run_dir)
    s = from_scenario(scenario)
    extravars = yaml.safe_load((k8s_dir / "vars.yml").read_text())
    if install:
        extravars["cb_install_k3s"] = inventory is not None
    playbook("site.yml" if install else "deploy.yml", extravars, run_dir / "ansible", inventory)
    client = client or K8sClient(s.namespace, kubeconfig=s.kubeconfig)
    check_versions(client, s, timeout_s=extravars["cb_ready_timeout_s"])
    client.wait_rayservice_ready(s.name, timeout_s=extravars["cb_ready_timeout_s"])
    node_map = client.node_map()
    missing = [n for n in s.node_names if n not in node_map]
    if missing:
        raise PreflightFailed(f"no Kubernetes node labelled {', '.join(missing)} (label chaosbench.io/node)")
    workers = worker_pods(client)
    placement = locate_ranks(client, s, node_map)
    actions = plan_faults(s, scenario, placement)
    # the playbooks (inject.yml, teardown's agent recovery) read the plan: give them the reported GPUs too
    atomic_write_text(k8s_dir / "faults" / "plan.json", json.dumps([a.to_json() for a in actions], indent=2) + "\n")
    atomic_write_json(k8s_dir / "placement.json", placement.to_json())
    url = prometheus_url or os.environ.get("CHAOSBENCH_K8S_PROMETHEUS_URL", DEFAULT_PROMETHEUS)
    return K8sTestbed(settings=s, client=client, run_dir=run_dir, k8s_dir=k8s_dir, node_map=node_map,
                      actions=actions, prometheus_url=url, placement=placement,
                      worker_pods={n: [p.name for p in pods] for n, pods in workers.items()},
                      playbook=playbook, inventory=inventory)


VERSIONS_PY = "import json, ray, vllm; print(json.dumps({'ray': ray.__version__, 'vllm': vllm.__version__}))"


def check_versions(client: K8sClient, s: K8sSettings, timeout_s: float = 1800) -> dict[str, str]:
    """Read Ray's and vLLM's versions in the running head pod; refuse, in one line, an image that does not
    carry the versions the rendered manifests need (the image tag's Ray, Ray >= 2.51, vLLM >= 0.11)."""
    head = client.wait_pods_ready("chaosbench.io/role=head", 1, timeout_s=timeout_s)[0]
    res = client.exec(head.name, ["python", "-c", VERSIONS_PY])
    try:
        found = json.loads(res.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise PreflightFailed(f"image {s.image}: cannot import ray and vllm in the head pod "
                              f"({(res.stderr or res.stdout).strip()[-200:] or f'exit {res.rc}'})") from None
    want = image_ray_version(s.image)
    problems = []
    if found["ray"] != want:
        problems.append(f"Ray {found['ray']} where the tag and rayVersion say {want}")
    if version_tuple(found["ray"]) < MIN_RAY:
        problems.append(f"Ray {found['ray']} < {'.'.join(map(str, MIN_RAY))}")
    if version_tuple(found["vllm"]) < MIN_VLLM:
        problems.append(f"vLLM {found['vllm']} < {'.'.join(map(str, MIN_VLLM))}")
    if problems:
        raise PreflightFailed(f"image {s.image}: " + "; ".join(problems))
    return found


def worker_pods(client: K8sClient) -> dict[str, list]:
    """node-<i> -> its running Ray worker pods, found by labels (never by KubeRay's generated names)."""
    out: dict[str, list] = {}
    for pod in client.pods("chaosbench.io/role=worker"):
        node = pod.labels.get("chaosbench.io/node")
        if node and pod.phase == "Running":
            out.setdefault(node, []).append(pod)
    return out


def locate_ranks(client: K8sClient, s: K8sSettings, node_map: dict[str, str]) -> Placement:
    """Ranks -> GPUs from the fault agents' ``locate`` on every node (placement.py)."""
    located = {node: client.run_agent(node, locate_command(s), node_map) for node in s.node_names}
    ips = {node: pods[0].ip for node, pods in worker_pods(client).items() if pods}
    return from_located(s, located, ips)
