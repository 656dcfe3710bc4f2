"""Dry-run rendering of every shipped scenario for the k8s backend, validated offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chaosbench.backends.k8s import dry_run
from chaosbench.backends.k8s.render import DCGM_FIELDS, LOCUSTFILE, render_all, serve_config
from chaosbench.backends.k8s.settings import from_scenario
from chaosbench.faults.catalog import FAULT_IDS, FAULTS
from chaosbench.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p for p in (REPO / "scenarios").glob("*.yaml") if not p.name.startswith("_"))


def _scenario(name: str):
    return load_scenario(REPO / "scenarios" / f"{name}.yaml")


def test_dry_run_touches_no_cluster(tmp_path: Path):
    """Rendering imports neither the Kubernetes client nor ansible-runner, and needs no kubeconfig."""
    code = (
        "import sys\n"
        "from chaosbench.backends.k8s import dry_run\n"
        "from chaosbench.scenario import load_scenario\n"
        f"dry_run(load_scenario({str(REPO / 'scenarios' / 'gpu-power-cap.yaml')!r}), {str(tmp_path)!r})\n"
        "bad = [m for m in ('kubernetes', 'ansible_runner', 'prometheus_api_client') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(tmp_path / "missing"), "PYTHONPATH": str(REPO),
           "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "k8s" / "plan.json").is_file()


def test_every_fault_and_clean_has_a_scenario():
    names = {p.stem for p in SCENARIOS}
    assert set(FAULT_IDS) | {"clean"} <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_dry_run_renders_and_validates(path: Path, tmp_path: Path):
    scenario = load_scenario(path)
    k8s_dir = dry_run(scenario, tmp_path)
    assert k8s_dir == (tmp_path / "k8s").resolve()
    plan = json.loads((k8s_dir / "plan.json").read_text())
    assert plan["touched_cluster"] is False
    for rel in plan["files"]:
        assert (k8s_dir / rel).is_file(), rel
    kinds = set()
    for f in (k8s_dir / "manifests").glob("*.yaml"):
        kinds |= {d["kind"] for d in yaml.safe_load_all(f.read_text()) if d}
    assert {"Namespace", "RayService", "DaemonSet", "Job", "PodMonitor", "ConfigMap"} <= kinds
    faults = json.loads((k8s_dir / "faults" / "plan.json").read_text())
    assert [f["fault_id"] for f in faults] == [s.id for s in scenario.spec.faults]
    for f in faults:
        assert f["mechanisms"], f
        want = "fault-agent" if FAULTS[f["fault_id"]].fault_class == "GPU" else None
        if want:
            assert want in f["mechanisms"]
    vars_ = yaml.safe_load((k8s_dir / "vars.yml").read_text())
    assert all(Path(m).is_file() for m in vars_["cb_manifests"] + vars_["cb_fault_manifests"])


def test_chaos_mesh_objects_carry_scenario_params(tmp_path: Path):
    k8s_dir = dry_run(_scenario("network-delay"), tmp_path)
    (obj,) = list(yaml.safe_load_all((k8s_dir / "faults" / "00-network-delay.yaml").read_text()))
    p = _scenario("network-delay").spec.faults[0].params
    assert obj["kind"] == "NetworkChaos"
    assert obj["spec"]["delay"]["latency"] == f"{p.delay_ms:g}ms"
    assert obj["spec"]["selector"]["labelSelectors"] == {"chaosbench.io/node": "node-1"} or \
        obj["spec"]["selector"]["labelSelectors"]["chaosbench.io/node"].startswith("node-")
    cpu = yaml.safe_load((dry_run(_scenario("cpu-contention"), tmp_path / "c") / "faults" /
                          "00-cpu-contention.yaml").read_text())
    params = _scenario("cpu-contention").spec.faults[0].params
    assert cpu["spec"]["stressors"]["cpu"] == {"workers": params.workers, "load": params.load}


def test_serve_config_follows_topology_and_nccl_faults():
    s = from_scenario(_scenario("nccl-hang"))
    app = serve_config(s)["applications"][0]
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    llm = app["args"]["llm_configs"][0]
    assert llm["engine_kwargs"]["tensor_parallel_size"] == s.tensor_parallel
    assert llm["engine_kwargs"]["disable_custom_all_reduce"] is True  # NCCL faults must bite
    assert len(llm["placement_group_config"]["bundles"]) == s.tensor_parallel
    assert "VLLM_TORCH_PROFILER_DIR" in llm["runtime_env"]["env_vars"]
    clean = serve_config(from_scenario(_scenario("clean")))["applications"][0]["args"]["llm_configs"][0]
    assert "disable_custom_all_reduce" not in clean["engine_kwargs"]


def test_locust_job_runs_the_harness_locustfile(tmp_path: Path):
    rendered = render_all(_scenario("clean"), tmp_path)
    docs = dict((d["kind"], d) for _, d in rendered.documents("manifests/60-locust.yaml"))
    assert docs["ConfigMap"]["data"]["locustfile.py"] == LOCUSTFILE.read_text()
    config = json.loads(docs["ConfigMap"]["data"]["load-config.json"])
    assert config["users"] == _scenario("clean").spec.workload.users
    assert config["api_url"].endswith(":8000")
    env = {e["name"]: e["value"] for e in docs["Job"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CHAOSBENCH_LOAD_CONFIG"] == "/mnt/locust/load-config.json"


def test_dcgm_counters_include_fault_signals(tmp_path: Path):
    rendered = render_all(_scenario("clean"), tmp_path)
    (cm,) = [d for _, d in rendered.documents("manifests/10-dcgm-counters.yaml")]
    fields = {line.split(",")[0] for line in cm["data"]["dcgm-metrics.csv"].splitlines() if line and line[0] != "#"}
    assert fields == {f for f, _, _ in DCGM_FIELDS}
    for needed in ("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "DCGM_FI_DEV_POWER_VIOLATION", "DCGM_FI_DEV_THERMAL_VIOLATION",
                   "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
                   "DCGM_FI_PROF_NVLINK_TX_BYTES"):
        assert needed in fields


def test_column_names_follow_case_convention(tmp_path: Path):
    rendered = render_all(_scenario("gpu-power-cap"), tmp_path)
    cols = [q["column"] for q in json.loads(rendered.files["collect/queries.json"])]
    assert len(cols) == len(set(cols))
    comps = {c.split("_", 1)[0] for c in cols}
    assert comps == {"ingress", "node-0", "node-1", "rank-0", "rank-1", "rank-2", "rank-3"}


def test_dry_run_places_ranks_as_expected_with_gpu_placeholders():
    """Without a cluster the plan keeps the scenario's contiguous blocks and names GPUs by placeholder only."""
    from chaosbench.backends.k8s.faults import plan_faults

    s = from_scenario(_scenario("clean"))
    scn = _scenario("clean").spec.deployment.topology
    assert [s.rank_node(r) for r in range(4)] == [scn.rank_node(r) for r in range(4)]
    action = plan_faults(s, _scenario("gpu-power-cap"))[0]
    assert action.gpu == "{gpu_uuid:rank-2}" and "{gpu_uuid:rank-2}" in action.agent_inject[0].argv


def test_every_cluster_action_names_an_agent_mechanism():
    """The fault modules' cluster actions and the agent's mechanism table agree (the agent knows no fault id)."""
    sys.path.insert(0, str(REPO / "harness" / "backends" / "k8s" / "agent"))
    try:
        from fault_agent import MECHANISMS
    finally:
        sys.path.pop(0)
    from chaosbench.backends.k8s.faults import plan_faults

    used = set()
    for path in SCENARIOS:
        scenario = load_scenario(path, {"deployment": {"backend": "k8s"}})
        for action in plan_faults(from_scenario(scenario), scenario):
            for cmd in (*action.agent_inject, *action.agent_verify, *action.agent_recover):
                used.add(cmd.argv[3])
    assert used == set(MECHANISMS)
