"""deploy_k8s, the k8s injectors and the Locust Job runner, with a stand-in cluster (no cluster here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaosbench.backends.base import check_testbed
from chaosbench.backends.k8s.backend import K8sLoadRun, deploy_k8s
from chaosbench.backends.k8s.injectors import recover_from_handle
from chaosbench.errors import FaultNotVerified, PreflightFailed
from chaosbench.scenario import load_scenario

from .fakes import NODE_MAP, FakeCluster

REPO = Path(__file__).resolve().parents[2]


def _scenario(name: str):
    return load_scenario(REPO / "scenarios" / f"{name}.yaml")


def _deploy(tmp_path: Path, name: str, cluster: FakeCluster, **kw):
    played = []

    def playbook(pb, extravars, private_dir, inventory):
        played.append((pb, extravars, inventory))

    testbed = deploy_k8s(_scenario(name), tmp_path, client=cluster, playbook=playbook,
                         prometheus_url="http://prom.invalid:9090", **kw)
    return testbed, played


def test_deploy_renders_runs_deploy_playbook_and_waits(tmp_path: Path):
    cluster = FakeCluster()
    testbed, played = _deploy(tmp_path, "clean", cluster)
    assert [p[0] for p in played] == ["deploy.yml"]
    assert played[0][1]["cb_render_dir"] == str((tmp_path / "k8s").resolve())
    assert (tmp_path / "k8s" / "manifests" / "30-rayservice.yaml").is_file()
    # versions read in the head pod before the wait; ranks placed from what each node's agent reports
    assert [c[:2] for c in cluster.calls] == [("wait_pods_ready", "chaosbench.io/role=head"), ("exec", "cb-head-x7k2p"),
                                              ("wait_rayservice_ready", "cb-clean"), ("agent", "node-0"),
                                              ("agent", "node-1")]
    assert [c[2][2] for c in cluster.calls if c[0] == "agent"] == ["locate", "locate"]
    assert testbed.backend == "k8s" and testbed.engine == "vllm"
    assert sorted(testbed.nodes) == ["node-0", "node-1"] and testbed.nodes["node-1"].ip == "gpu-b-03"
    assert testbed.ranks["rank-3"].node == "node-1"
    assert testbed.placement.gpu(3) == "GPU-node-1-1" and testbed.placement.source == "cluster"
    assert testbed.worker_pods == {"node-0": ["cb-node-0-workers-0q9z"], "node-1": ["cb-node-1-workers-1q9z"]}
    assert testbed.api_url == "http://cb-clean-serve-svc.chaosbench.svc:8000"
    with pytest.raises(PreflightFailed):
        testbed.rank_pid("rank-0")
    assert check_testbed("k8s", testbed) is testbed and not testbed.reusable  # each case gets a new deployment
    assert testbed.promql("sum(vllm:num_requests_running)") != "sum(vllm:num_requests_running)"  # cluster names
    assert testbed.teardown().describe() == "nothing" and played[-1][0] == "teardown.yml"


def test_ranks_follow_the_engines_node(tmp_path: Path):
    """vLLM ranks the engine's node first: with the engine on node-1, ranks 0 and 1 are node-1's GPUs."""
    testbed, _ = _deploy(tmp_path, "gpu-power-cap", FakeCluster(engine_node="node-1"))
    assert [testbed.ranks[f"rank-{r}"].node for r in range(4)] == ["node-1", "node-1", "node-0", "node-0"]
    step = _scenario("gpu-power-cap").spec.faults[0]  # rank-2: node-0's first GPU now
    action = next(a for a in testbed.actions if a.step == 0)
    assert (action.node, action.gpu, step.target.rank) == ("node-0", "GPU-node-0-0", 2)


@pytest.mark.parametrize("versions,match", [({"ray": "2.50.0", "vllm": "0.11.0"}, "Ray 2.50.0 where the tag"),
                                            ({"ray": "2.52.0", "vllm": "0.10.1"}, "vLLM 0.10.1 < 0.11.0")])
def test_deploy_refuses_an_image_with_other_versions(tmp_path: Path, versions: dict, match: str):
    with pytest.raises(PreflightFailed, match=match):
        _deploy(tmp_path, "clean", FakeCluster(versions=versions))


def test_deploy_refuses_a_worker_count_that_does_not_match(tmp_path: Path):
    with pytest.raises(PreflightFailed, match="reports 2 vLLM worker processes .* 4 ranks"):
        _deploy(tmp_path, "clean", FakeCluster(gpus_per_node=1))


def test_install_runs_site_playbook(tmp_path: Path):
    _, played = _deploy(tmp_path, "clean", FakeCluster(), install=True, inventory=tmp_path / "inventory.ini")
    assert played[0][0] == "site.yml" and played[0][1]["cb_install_k3s"] is True


def test_deploy_refuses_unlabelled_nodes(tmp_path: Path):
    with pytest.raises(PreflightFailed, match="node-1"):
        _deploy(tmp_path, "clean", FakeCluster(node_map={"node-0": "gpu-a-17"}))


def test_chaos_mesh_injector_lifecycle(tmp_path: Path):
    cluster = FakeCluster(injected_after=2)
    testbed, _ = _deploy(tmp_path, "network-delay", cluster)
    step = _scenario("network-delay").spec.faults[0]
    inj = testbed.injector(step.id)
    inj.preflight(testbed, step)
    handle = inj.prepare(testbed, step, key="k1")
    json.dumps(handle)  # journal-able
    assert handle["component"] == step.target.component and not cluster.chaos
    inj.inject(handle, testbed)
    assert [c[1] for c in cluster.calls if c[0] == "create"] == ["NetworkChaos"]
    assert inj.verify(handle, testbed) is None and inj.verify(handle, testbed) is None
    evidence = inj.verify(handle, testbed)
    assert evidence is not None and "AllInjected" in evidence.detail and evidence.signal == "chaos-mesh"
    inj.recover(handle)
    inj.recover(handle)  # idempotent: the object is already gone
    assert [c[0] for c in cluster.calls if c[0] in ("create", "delete")] == ["create", "delete", "delete"]


def test_agent_injector_runs_the_rendered_commands(tmp_path: Path):
    cluster = FakeCluster()
    testbed, _ = _deploy(tmp_path, "gpu-power-cap", cluster)
    step = _scenario("gpu-power-cap").spec.faults[0]
    inj = testbed.injector(step.id)
    handle = inj.prepare(testbed, step, key="k2")
    inj.inject(handle, testbed)
    evidence = inj.verify(handle, testbed)
    inj.recover(handle)
    agent = [c for c in cluster.calls if c[0] == "agent" and c[2][2] != "locate"]
    node = _scenario("gpu-power-cap").spec.deployment.topology.rank_node(step.target.rank)
    assert [(c[1], c[2][2]) for c in agent] == [(node, "inject"), (node, "verify"), (node, "recover")]
    assert agent[0][2][-2:] == ("--watts", str(step.params.watts))
    assert evidence.extra["power_limit_w"] == 150.0


def test_agent_injector_unverified_and_missing_agent(tmp_path: Path):
    cluster = FakeCluster(agent_verified=False)
    testbed, _ = _deploy(tmp_path, "nccl-hang", cluster)
    step = _scenario("nccl-hang").spec.faults[0]
    inj = testbed.injector(step.id)
    handle = inj.inject(inj.prepare(testbed, step, "k3"), testbed)
    assert inj.verify(handle, testbed) is None
    cluster._node_map.pop(testbed.actions[0].node)
    inj._node_map = None
    with pytest.raises(PreflightFailed):
        inj.preflight(testbed, step)


def test_injector_rejects_a_step_outside_the_plan(tmp_path: Path):
    testbed, _ = _deploy(tmp_path, "gpu-power-cap", FakeCluster())
    other = _scenario("cpu-contention").spec.faults[0]
    with pytest.raises(PreflightFailed, match="not in the rendered fault plan"):
        testbed.injector(other.id).prepare(testbed, other, "k4")


def test_locust_job_results_come_back_as_local_load_files(tmp_path: Path):
    cluster = FakeCluster()
    records = [{"start": 100.0 + i, "ttft": 0.1, "itl": [0.02] * 3, "e2e": 0.2, "tokens": 4, "status": "ok",
                "code": 200, "error": None, "prompt_tokens": 8} for i in range(5)]
    cluster.files = {"started.json": json.dumps({"started_at": 99.5}),
                     "requests.jsonl": "".join(json.dumps(r) + "\n" for r in records), "exit_code": "0\n",
                     "locust_stats.csv": "Type,Name\n"}
    run = K8sLoadRun(cluster, "cb-clean-locust", tmp_path / "load", {"ttft": 2.0, "tpot": 0.25, "e2e": 15.0},
                     sleep=lambda s: None)
    assert run.wait_started(timeout_s=5) == 99.5
    summary = run.finish(timeout_s=5)
    assert summary["requests"] == 5 and summary["completed"] == 5
    assert (tmp_path / "load" / "requests.jsonl").read_text().count("\n") == 5
    assert (tmp_path / "load" / "locust_stats.csv").is_file()
    assert json.loads((tmp_path / "load" / "summary.json").read_text())["requests"] == 5


def test_agent_failure_surfaces_as_not_verified(tmp_path: Path):
    class Failing(FakeCluster):
        def run_agent(self, node, argv, node_map=None):
            if argv[2] == "locate":
                return super().run_agent(node, argv, node_map)
            raise FaultNotVerified("fault agent on node-1: nvidia-smi -pl: Insufficient Permissions")

    testbed, _ = _deploy(tmp_path, "gpu-power-cap", Failing())
    step = _scenario("gpu-power-cap").spec.faults[0]
    inj = testbed.injector(step.id)
    with pytest.raises(FaultNotVerified, match="Insufficient"):
        inj.inject(inj.prepare(testbed, step, "k5"), testbed)
    with pytest.raises(RuntimeError, match="Insufficient"):
        inj.recover(inj.prepare(testbed, step, "k5"))


def test_recovery_from_the_journalled_handle_alone(tmp_path: Path):
    testbed, _ = _deploy(tmp_path, "interconnect-degradation", FakeCluster())
    step = _scenario("interconnect-degradation").spec.faults[0]
    inj = testbed.injector(step.id)
    handle = json.loads(json.dumps(inj.inject(inj.prepare(testbed, step, "k6"), testbed)))  # through the journal
    assert handle["namespace"] == "chaosbench"
    other = FakeCluster()  # a fresh client, as `chaosbench cleanup` would make
    recover_from_handle(handle, client=other)
    deleted = [c for c in other.calls if c[0] == "delete"]
    assert [c[1] for c in deleted] == ["NetworkChaos"]
    assert [c[2][2] for c in other.calls if c[0] == "agent"] == ["recover"]  # the NVLink hog (2 GPUs per node)


def test_start_load_applies_the_job_through_deploy_playbook(tmp_path: Path):
    from chaosbench.load.driver import LoadConfig

    testbed, played = _deploy(tmp_path, "clean", FakeCluster())
    config = LoadConfig.from_scenario(_scenario("clean"), testbed.api_url)
    run = testbed.start_load(config, tmp_path / "load")
    assert played[-1][0] == "deploy.yml" and played[-1][1]["cb_start_load"] is True
    assert played[-1][1]["cb_node_map"] == NODE_MAP
    assert run.job == "cb-clean-locust" and run.slo == config.slo


def test_the_fault_lifecycle_uses_the_backends_injectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from chaosbench.case import CaseWriter
    from chaosbench.faults.lifecycle import injected

    monkeypatch.setenv("CHAOSBENCH_RECOVERY_DIR", str(tmp_path / "recovery"))
    cluster = FakeCluster()
    testbed, _ = _deploy(tmp_path, "network-delay", cluster)
    step = _scenario("network-delay").spec.faults[0]
    writer = CaseWriter(tmp_path / "case")
    with injected(testbed, step, writer, 0) as fault:
        assert fault.verified and "AllInjected" in fault.evidence.detail
        assert list(cluster.chaos) and list((tmp_path / "recovery").glob("*.jsonl"))  # journalled while in
    assert not cluster.chaos  # deleted at recovery
    truth = json.loads((writer.path / "ground_truth.json").read_text())
    assert truth["fault_id"] == "network-delay" and truth["verified"] is True


def test_a_crashed_runs_k8s_journal_is_replayed_against_the_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from chaosbench.faults.journal import Journal, replay_fault_journals

    monkeypatch.setenv("CHAOSBENCH_RECOVERY_DIR", str(tmp_path / "recovery"))
    testbed, _ = _deploy(tmp_path, "network-delay", FakeCluster())
    step = _scenario("network-delay").spec.faults[0]
    inj = testbed.injector(step.id)
    handle = inj.inject(inj.prepare(testbed, step, "k7"), testbed)
    journal = Journal("k7", tmp_path / "case")
    journal.begin(dict(handle))  # ... and the harness dies here
    fresh = FakeCluster()
    made = []

    def client(namespace, kubeconfig=None):
        made.append(namespace)
        return fresh

    monkeypatch.setattr("chaosbench.backends.k8s.client.K8sClient", client)
    assert replay_fault_journals(tmp_path, include_live=True) == 1
    assert made == ["chaosbench"] and [c[1] for c in fresh.calls if c[0] == "delete"] == ["NetworkChaos"]
    assert replay_fault_journals(tmp_path, include_live=True) == 0  # done is journalled


def test_deploy_rewrites_the_fault_plan_with_the_reported_gpus(tmp_path: Path):
    """inject.yml and teardown's agent recovery read faults/plan.json: after deploy it names real GPUs."""
    _deploy(tmp_path, "gpu-power-cap", FakeCluster(engine_node="node-1"))
    plan = json.loads((tmp_path / "k8s" / "faults" / "plan.json").read_text())
    assert plan[0]["gpu"] == "GPU-node-0-0" and plan[0]["node"] == "node-0"
    assert "GPU-node-0-0" in plan[0]["agent_recover"][0]["argv"]
    placement = json.loads((tmp_path / "k8s" / "placement.json").read_text())
    assert placement["source"] == "cluster" and placement["ranks"]["rank-0"]["node"] == "node-1"
