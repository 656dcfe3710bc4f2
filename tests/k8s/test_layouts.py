"""The k8s backend on data-parallel and pipeline-parallel layouts: DP = Serve replicas, PP = vLLM's
pipeline_parallel_size, a placement group of PP x TP GPU bundles per replica (Ray Serve LLM's cross-node
parallelism guide: the GPUs of one engine are tensor_parallel_size * pipeline_parallel_size), replica and stage
fault targets as one agent command per GPU, and ``chaosbench run <layout> --backend k8s --dry-run`` per layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chaosbench.backends.k8s import dry_run
from chaosbench.backends.k8s.faults import plan_faults
from chaosbench.backends.k8s.placement import check_replicas_fit, from_located
from chaosbench.backends.k8s.render import render_all, serve_config
from chaosbench.backends.k8s.settings import from_scenario
from chaosbench.errors import InputInvalid, PreflightFailed
from chaosbench.scenario import expand_suite, load_scenario, load_suite

REPO = Path(__file__).resolve().parents[2]
LAYOUTS = REPO / "scenarios" / "layouts"
SUITES = sorted((REPO / "scenarios" / "suites").glob("layout-*.yaml"))
RUNS = [s for suite in SUITES for s, _, _ in expand_suite(load_suite(suite), suite)]
K8S = {"deployment": {"backend": "k8s"}}


def _llm(scenario) -> dict:
    return serve_config(from_scenario(scenario))["applications"][0]["args"]["llm_configs"][0]


@pytest.mark.parametrize("suite", SUITES, ids=lambda p: p.stem)
def test_replicas_stages_and_placement_groups(suite: Path):
    scenario = expand_suite(load_suite(suite), suite)[0][0]
    topo = scenario.spec.deployment.topology
    llm = _llm(scenario)
    assert llm["deployment_config"]["num_replicas"] == topo.data_parallel
    assert llm["engine_kwargs"]["tensor_parallel_size"] == topo.tensor_parallel
    assert llm["engine_kwargs"].get("pipeline_parallel_size", 1) == topo.pipeline_parallel
    assert llm["placement_group_config"] == {"bundles": [{"GPU": 1}] * (topo.tensor_parallel * topo.pipeline_parallel),
                                             "strategy": "PACK"}


def test_one_stage_renders_as_before():
    llm = _llm(load_scenario(REPO / "scenarios" / "clean.yaml", K8S))
    assert "pipeline_parallel_size" not in llm["engine_kwargs"]
    assert len(llm["placement_group_config"]["bundles"]) == 4


@pytest.mark.parametrize("scenario", RUNS, ids=lambda s: s.metadata.name)
def test_every_layout_scenario_dry_runs(scenario, tmp_path: Path):
    k8s_dir = dry_run(scenario, tmp_path)
    plan = json.loads((k8s_dir / "plan.json").read_text())
    topo = scenario.spec.deployment.topology
    assert plan["touched_cluster"] is False
    assert plan["topology"]["pipeline_parallel"] == topo.pipeline_parallel
    assert plan["topology"]["layout"] == json.loads(json.dumps(topo.grid.record()))
    service = yaml.safe_load((k8s_dir / "manifests" / "30-rayservice.yaml").read_text())
    llm = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]["llm_configs"][0]
    assert llm == _llm(scenario)
    faults = json.loads((k8s_dir / "faults" / "plan.json").read_text())
    assert [f["component"] for f in faults] == [s.target.component for s in scenario.spec.faults]


def test_a_stage_fault_runs_the_agent_on_each_gpu_of_the_stage():
    scenario = load_scenario(LAYOUTS / "pp4-tp2" / "gpu-clock-lock.yaml", K8S)  # replica-0.stage-2: ranks 4, 5
    action = plan_faults(from_scenario(scenario), scenario)[0]
    assert (action.component, action.node, action.gpu) == ("replica-0.stage-2", "node-2", "{gpu_uuid:rank-4}")
    for cmds in (action.agent_inject, action.agent_verify, action.agent_recover):
        assert [(c.node, c.argv[c.argv.index("--gpu") + 1]) for c in cmds] == \
            [("node-2", "{gpu_uuid:rank-4}"), ("node-2", "{gpu_uuid:rank-5}")]
    replica = load_scenario(LAYOUTS / "dp2-tp4" / "gpu-clock-lock.yaml", K8S)  # replica-1: ranks 4-7 on node-1
    action = plan_faults(from_scenario(replica), replica)[0]
    assert [c.argv[c.argv.index("--gpu") + 1] for c in action.agent_inject] == \
        [f"{{gpu_uuid:rank-{r}}}" for r in range(4, 8)]


def test_a_replica_that_would_span_nodes_is_refused_in_one_line(tmp_path: Path):
    over = {"deployment": {"backend": "k8s", "topology": {"nodes": 4}}}
    scenario = load_scenario(LAYOUTS / "dp2-pp2-tp2" / "clean.yaml", over)
    with pytest.raises(InputInvalid) as exc:
        check_replicas_fit(from_scenario(scenario))
    assert "data_parallel 2 with 4 GPUs per replica (pipeline_parallel 2 x tensor_parallel 2) on nodes of 2 GPUs" \
        in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(InputInvalid):
        render_all(scenario, tmp_path)
    check_replicas_fit(from_scenario(load_scenario(LAYOUTS / "pp4-tp2" / "clean.yaml", K8S)))  # one replica: spans


def _located(nodes: int, workers: int, engines: dict[str, int]) -> dict:
    return {f"node-{n}": {"workers": [{"uuid": f"GPU-{n}-{i}", "index": i, "bus_id": f"0000:{i:02x}:00.0"}
                                      for i in range(workers)], "engines": engines.get(f"node-{n}", 0)}
            for n in range(nodes)}


def test_placement_from_the_cluster_counts_pp_x_tp_workers_per_engine():
    s = from_scenario(load_scenario(LAYOUTS / "dp2-pp2-tp2" / "clean.yaml", K8S))
    placement = from_located(s, _located(2, 4, {"node-0": 1, "node-1": 1}), {})
    assert [placement.node(r) for r in range(8)] == ["node-0"] * 4 + ["node-1"] * 4
    bad = _located(2, 4, {"node-0": 2})
    with pytest.raises(PreflightFailed, match=r"node-0: 4 vLLM workers for 2 engine\(s\) of 4 GPUs"):
        from_located(s, bad, {})
    pp = from_scenario(load_scenario(LAYOUTS / "pp4-tp2" / "clean.yaml", K8S))
    placement = from_located(pp, _located(4, 2, {"node-2": 1}), {f"node-{n}": f"10.0.0.{n}" for n in range(4)})
    assert [placement.node(r) for r in range(0, 8, 2)] == ["node-2", "node-0", "node-1", "node-3"]


@pytest.mark.parametrize("suite", SUITES, ids=lambda p: p.stem)
def test_cli_dry_run_renders_each_layout(suite: Path, tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-c", "from chaosbench.cli import main; main()", "run", str(suite), "--backend", "k8s",
         "--dry-run", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rendered = [line for line in out.stdout.splitlines() if line.startswith("rendered ")]
    assert len(rendered) == 4
    assert len(list(tmp_path.glob("*-dry-run/*/k8s/plan.json"))) == 4


def test_layout_llm_configs_validate_against_rays_llmconfig():
    try:
        from ray.serve.llm import LLMConfig
    except Exception as exc:  # noqa: BLE001 - ray[llm] pulls vllm and pyarrow; any import failure means "not here"
        pytest.skip(f"ray.serve.llm not importable here ({type(exc).__name__})")
    for scenario in RUNS:
        LLMConfig.model_validate(_llm(scenario))
