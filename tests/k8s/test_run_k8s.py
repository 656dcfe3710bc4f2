"""``chaosbench run SCENARIO --backend k8s`` end to end: ``chaosbench.runner.run_scenario`` on the k8s backend.

No Kubernetes or GPU cluster can run where these tests run, so the run goes against stand-ins (fakes.py):
``StandInCluster`` answers the backend's Kubernetes calls (RayService, pods, exec into the Locust Job, the
profiler, the fault agent, Chaos Mesh objects, logs), a stand-in playbook runner records the Ansible
playbooks (and starts the Locust Job when deploy.yml is told to), and ``PrometheusStub`` is a tiny local
HTTP server speaking the Prometheus HTTP API (instant and range queries) with the series names the
cluster has. Everything else is the real pipeline: deploy_k8s's rendering, the runner's timeline, gate,
stop conditions, fault lifecycle and journal, K8sLoadRun, the k8s collectors, the case writer.

The workload is shortened to seconds through load_scenario(..., overrides=...).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from chaosbench.backends.k8s.settings import from_scenario
from chaosbench.faults.journal import journal_files, pending, read_entries
from chaosbench.runner import run_scenario
from chaosbench.scenario import load_scenario

from .fakes import PrometheusStub, StandInCluster

REPO = Path(__file__).resolve().parents[2]
DURATION = 7.0  # seconds of load; a fault holds from 2 s to 4 s, the clean run's nominal injection is at 3 s
CASE_FILES = ("manifest.json", "events.jsonl", "inject_time.txt", "data.csv", "logs.csv", "topology.json",
              "load/requests.jsonl", "load/summary.json")
LABEL_FILES = ("ground_truth.json", "scenario.resolved.yaml")  # labels/<case>/ (not blind), or the case itself


def label(case: Path, name: str) -> Path:
    """A non-blind file of ``case``: results/labels/<case>/ when the run keeps labels apart, else the case dir.
    The full manifest and the full event journal live there as manifest.full.json and events.jsonl."""
    labels = case.parent.parent / "labels" / case.name
    if name == "manifest.json" and (labels / "manifest.full.json").is_file():
        return labels / "manifest.full.json"
    return labels / name if (labels / name).is_file() else case / name


def short_scenario(name: str, **verify):
    """scenarios/<name>.yaml on the k8s backend, the load cut to DURATION seconds."""
    path = REPO / "scenarios" / f"{name}.yaml"
    over = {"deployment": {"backend": "k8s"}, "workload": {"warmup": "1s", "duration": f"{DURATION:g}s"},
            "nominal_inject": "3s", "traces": {"baseline": "1s"}}
    faults = yaml.safe_load(path.read_text())["spec"].get("faults") or []
    if faults:
        over["faults"] = [{**f, "start": "2s", "duration": "2s", "verify": {**f.get("verify", {}), "timeout": "2s",
                                                                            **verify}} for f in faults]
    return load_scenario(path, over)


@pytest.fixture
def recovery_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "recovery"
    monkeypatch.setenv("CHAOSBENCH_RECOVERY_DIR", str(path))
    return path


@pytest.fixture
def prometheus():
    with PrometheusStub() as prom:
        yield prom


def run_k8s(tmp_path: Path, scenario, prom: PrometheusStub, **cluster_kw):
    """run_scenario against a StandInCluster; (case dir, cluster, playbooks run, error raised or None)."""
    cluster = StandInCluster(from_scenario(scenario), **cluster_kw)
    played: list[tuple[str, dict]] = []

    def playbook(name, extravars, private_dir, inventory):
        played.append((name, dict(extravars)))
        cluster.calls.append(("playbook", name))
        if name == "deploy.yml" and extravars.get("cb_start_load"):
            cluster.start_locust(scenario.spec.workload.duration)

    out = tmp_path / "results" / "cases" / f"{scenario.metadata.name}-r0"
    error = None
    try:
        run_scenario(scenario, out, deploy_kwargs={"client": cluster, "playbook": playbook,
                                                   "prometheus_url": prom.url})
    except Exception as exc:  # noqa: BLE001 - returned for the test to judge
        error = exc
    return out, cluster, played, error


def events(case: Path) -> list[dict]:
    return [json.loads(line) for line in label(case, "events.jsonl").read_text().splitlines()]


def stage_ends(case: Path) -> dict[str, str]:
    return {e["stage"]: e["status"] for e in events(case) if e["event"] == "end"}


def assert_complete_case(case: Path, status: str) -> dict:
    assert case.is_dir() and not case.with_name(case.name + ".partial").exists()
    missing = [f for f in CASE_FILES if not (case / f).is_file()] + \
        [f for f in LABEL_FILES if not label(case, f).is_file()]
    assert not missing, missing
    manifest = json.loads(label(case, "manifest.json").read_text())
    assert manifest["status"] == status, manifest.get("reason")
    assert manifest["backend"] == "k8s" and manifest["engine"] == "vllm"
    topology = json.loads((case / "topology.json").read_text())
    assert topology["backend"] == "k8s" and topology["engine"] == "vllm" and topology["emulated_device"] is False
    assert topology["ranks"] == ["rank-0", "rank-1", "rank-2", "rank-3"]
    requests = (case / "load" / "requests.jsonl").read_text().splitlines()
    assert len(requests) == int(DURATION * 4) and manifest["load"]["requests"] == len(requests)
    with (case / "data.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= DURATION and rows[0]["time"]
    for column in ("ingress_vllm:e2e_request_latency_seconds:p95", "node-1_chaosbench_node_cpu_usage_seconds:rate",
                   "rank-2_DCGM_FI_DEV_POWER_USAGE", "ingress_error_rate"):
        assert column in rows[0], column
    assert sorted(p.name for p in (case / "traces").iterdir()) == [f"rank-{r}.json" for r in range(4)]
    ends = stage_ends(case)
    for stage in ("deploy", "load.start", "baseline.gate", "traces.start", "traces.stop", "recovery.probes",
                  "load.end", "collect", "teardown"):
        assert ends.get(stage) == "ok", (stage, ends.get(stage))
    assert manifest["steady_state_after"] == "ok" and manifest["teardown_leftovers"] == "nothing"
    return manifest


def assert_nothing_pending(case: Path, recovery_dir: Path) -> None:
    for path in journal_files(case):
        assert all(pending(records, include_live=True) is None for records in read_entries(path).values()), path
    assert not list(recovery_dir.glob("*.jsonl"))


def assert_torn_down_last(cluster: StandInCluster, played: list) -> None:
    assert [p[0] for p in played] == ["deploy.yml", "deploy.yml", "teardown.yml"]
    assert played[1][1]["cb_start_load"] is True and "cb_start_load" not in played[0][1]
    assert [c for c in cluster.calls if c[0] == "playbook"][-1] == ("playbook", "teardown.yml")


def test_clean_run(tmp_path: Path, prometheus: PrometheusStub, recovery_dir: Path):
    scenario = short_scenario("clean")
    case, cluster, played, error = run_k8s(tmp_path, scenario, prometheus)
    assert error is None
    manifest = assert_complete_case(case, "completed")
    truth = json.loads(label(case, "ground_truth.json").read_text())
    assert truth["fault_id"] is None and truth["verified"] is False
    inject = float((case / "inject_time.txt").read_text())
    assert inject == pytest.approx(manifest["load_start"] + 3.0, abs=0.01)
    assert manifest["load_start"] == pytest.approx(cluster.locust_started_at, abs=1e-3)
    assert cluster.profiler == ["start", "stop"]
    assert not [c for c in cluster.calls if c[0] in ("create", "delete") or (c[0] == "agent" and c[2][2] != "locate")]
    assert_torn_down_last(cluster, played)
    assert_nothing_pending(case, recovery_dir)
    # the scenario's steady-state probe reached Prometheus under the cluster's metric names
    probes = [q for p, q in prometheus.queries if p == "/api/v1/query"]
    assert "sum(rate(ray_vllm_request_success_total[15s]))" in probes
    assert not [q for q in probes if PrometheusStub.FOREIGN.search(q)]


def test_chaos_mesh_fault(tmp_path: Path, prometheus: PrometheusStub, recovery_dir: Path):
    scenario = short_scenario("network-delay")
    case, cluster, played, error = run_k8s(tmp_path, scenario, prometheus)
    assert error is None
    manifest = assert_complete_case(case, "completed")
    assert_torn_down_last(cluster, played)
    truth = json.loads(label(case, "ground_truth.json").read_text())
    assert truth["fault_id"] == "network-delay" and truth["component"] == "node-1" and truth["verified"] is True
    assert truth["realism"] == "real" and truth["start"] < truth["end"]
    assert float((case / "inject_time.txt").read_text()) == pytest.approx(truth["start"], abs=1e-3)
    assert manifest["load_start"] + 2.0 <= truth["start"] <= manifest["load_start"] + 4.0
    chaos = [c for c in cluster.calls if c[0] in ("create", "delete", "playbook")]
    name = f"{cluster.name}-f0"
    assert chaos == [("playbook", "deploy.yml"), ("playbook", "deploy.yml"), ("create", "NetworkChaos", name),
                     ("delete", "NetworkChaos", name), ("playbook", "teardown.yml")]
    assert not cluster.chaos
    fault_ends = [(e["stage"], e["status"]) for e in events(case) if e["stage"].startswith("fault") and
                  e["event"] == "end"]
    assert fault_ends == [("fault.preflight", "ok"), ("fault.inject", "ok"), ("fault.verify", "ok"),
                          ("fault.recover", "ok")]
    # the stop condition was watched while the fault was in, under the cluster's metric names
    stop = "(sum(rate(ray_vllm_request_success_total[10s])) == 0) and (sum(ray_vllm_num_requests_running) > 0)"
    assert ("/api/v1/query", stop) in prometheus.queries
    assert_nothing_pending(case, recovery_dir)


def test_fault_agent_fault(tmp_path: Path, prometheus: PrometheusStub, recovery_dir: Path):
    scenario = short_scenario("gpu-power-cap")
    case, cluster, played, error = run_k8s(tmp_path, scenario, prometheus)
    assert error is None
    assert_complete_case(case, "completed")
    truth = json.loads(label(case, "ground_truth.json").read_text())
    assert truth["fault_id"] == "gpu-power-cap" and truth["component"] == "rank-2" and truth["node"] == "node-1"
    assert truth["verified"] is True and truth["realism"] == "real"
    assert [(c[1], c[2][2]) for c in cluster.calls if c[0] == "agent"][:2] == [("node-0", "locate"),
                                                                                ("node-1", "locate")]
    agent = [(c[1], c[2][2]) for c in cluster.calls if c[0] == "agent" and c[2][2] != "locate"]
    assert agent[0] == ("node-1", "inject") and agent[-1] == ("node-1", "recover")
    assert set(agent[1:-1]) == {("node-1", "verify")}
    inject = next(c for c in cluster.calls if c[0] == "agent" and c[2][2] == "inject")
    # rank-2: node-1's first GPU in PCI bus order, by the UUID the node's agent reported (fakes.gpu_uuid)
    assert inject[2][3:] == ("power-cap", "--gpu", "GPU-node-1-0", "--run", cluster.name, "--watts", "200")
    order = [c for c in cluster.calls if c[0] in ("agent", "playbook")]
    assert order.index(("playbook", "teardown.yml")) > max(i for i, c in enumerate(order) if c[0] == "agent")
    assert_torn_down_last(cluster, played)
    assert_nothing_pending(case, recovery_dir)


@pytest.mark.parametrize("name,cluster_kw", [("network-delay", {"injected_after": 10**9}),
                                             ("gpu-power-cap", {"agent_verified": False}),
                                             ("gpu-power-cap", {"agent_error": "inject"})],
                         ids=["chaos-mesh-never-injected", "agent-never-verified", "agent-inject-refused"])
def test_unverified_fault_is_recorded_and_recovered(tmp_path: Path, prometheus: PrometheusStub, recovery_dir: Path,
                                                    name: str, cluster_kw: dict):
    scenario = short_scenario(name)
    assert scenario.spec.faults[0].verify.required
    case, cluster, played, error = run_k8s(tmp_path, scenario, prometheus, **cluster_kw)
    assert_torn_down_last(cluster, played)
    assert error is None  # as on the local backend: the case is recorded "not-verified", the run goes on
    manifest = assert_complete_case(case, "not-verified")
    truth = json.loads(label(case, "ground_truth.json").read_text())
    assert truth["fault_id"] == name and truth["verified"] is False and truth["end"] is not None
    if cluster_kw.get("agent_error"):
        assert "Insufficient Permissions" in manifest["reason"]
    else:
        assert "verify signal" in manifest["reason"] and "not seen" in manifest["reason"]
        assert ("fault.verify", "failed") in [(e["stage"], e["status"]) for e in events(case) if e["event"] == "end"]
    assert ("fault.recover", "ok") in [(e["stage"], e["status"]) for e in events(case) if e["event"] == "end"]
    if name == "network-delay":
        assert [c[0] for c in cluster.calls if c[0] in ("create", "delete")] == ["create", "delete"]
        assert not cluster.chaos
    else:
        verbs = [c[2][2] for c in cluster.calls if c[0] == "agent" and c[2][2] != "locate"]
        assert verbs[0] == "inject" and verbs[-1] == "recover" and verbs.count("recover") == 1
    assert_nothing_pending(case, recovery_dir)


def test_scenario_promql_gets_the_clusters_metric_names():
    from chaosbench.backends.k8s.collect import cluster_promql, column_queries

    scenario = load_scenario(REPO / "scenarios" / "clean.yaml", {"deployment": {"backend": "k8s"}, "telemetry": {
        "extra_metrics": [{"name": "waiting", "component": "ingress", "query": "vllm:num_requests_waiting"}]}})
    s = from_scenario(scenario)
    assert cluster_promql(s, "sum(rate(vllm:request_success_total[15s])) / sum(vllm:x)") == \
        "sum(rate(ray_vllm_request_success_total[15s])) / sum(ray_vllm_x)"
    assert cluster_promql(s, "sum(ray_vllm_x) + DCGM_FI_DEV_SM_CLOCK") == "sum(ray_vllm_x) + DCGM_FI_DEV_SM_CLOCK"
    extra = [q for q in column_queries(s, scenario) if q.column == "ingress_waiting"]
    assert [q.query for q in extra] == ["sum(ray_vllm_num_requests_waiting)"]
