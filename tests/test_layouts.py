"""Replicas and pipeline stages (issue #17, harness side): the DP x PP x TP layout, replica and stage targets and
which faults allow them, their ground truth, topology.json, campaigns over the new targets, the shipped layout
scenarios, and the shipped campaigns drawing byte-identical cases to a1c7614 (before layouts existed)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from chaosbench.backends.base import layout_rank
from chaosbench.campaign import load_campaign, plan, to_scenario
from chaosbench.case import Topology
from chaosbench.errors import ScenarioInvalid
from chaosbench.faults.catalog import CATALOG, FAULTS
from chaosbench.faults.lifecycle import ground_truth
from chaosbench.layout import parse_component
from chaosbench.runner import topology_of
from chaosbench.scenario import (
    Target,
    TopologySpec,
    expand_suite,
    load_document,
    load_scenario,
    load_suite,
    scenario_files,
    suite_scenario_paths,
)

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = REPO / "scenarios" / "layouts"
DRAWS = REPO / "tests" / "fixtures" / "draws"

# the target kinds each fault allows (FaultSpec.target_kinds): rank-level GPU mechanisms also on a stage or a
# whole replica; a hung rank, a failed GPU (XID), node and network mechanisms on their own kind only
KINDS = {
    "gpu-power-cap": ("rank", "stage", "replica"), "gpu-clock-lock": ("rank", "stage", "replica"),
    "gpu-compute-contention": ("rank", "stage", "replica"), "gpu-memory-pressure": ("rank", "stage", "replica"),
    "gpu-xid-error": ("rank",), "nccl-hang": ("rank",), "interconnect-degradation": ("node",),
    "cpu-contention": ("node",), "cpu-throttle": ("node",), "host-memory-pressure": ("node",),
    "network-delay": ("node",),
}

SCENARIO = """\
apiVersion: chaosbench/v1alpha1
kind: Scenario
metadata: {{name: t}}
spec:
  deployment:
    topology: {topology}
    model: {{layers: 4}}
  workload: {{duration: 60s, warmup: 5s}}
  faults:
    - id: {fault}
      target: {target}
      start: 20s
      duration: 10s
"""
DP2_PP2_TP2 = "{nodes: 2, tensor_parallel: 2, pipeline_parallel: 2, data_parallel: 2}"


def scenario_problems(tmp_path: Path, fault: str, target: str, topology: str = DP2_PP2_TP2) -> list[str]:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.format(topology=topology, fault=fault, target=target))
    try:
        load_document(path)
    except ScenarioInvalid as exc:
        return exc.problems
    return []


# ----------------------------------------------------------------------------- the layout


def test_global_rank_is_replica_stage_tp_index():
    topo = TopologySpec(nodes=2, tensor_parallel=2, pipeline_parallel=2, data_parallel=2)
    assert topo.world_size == 8
    places = [(c.replica, c.stage, c.tp_index) for c in map(topo.grid.coord, range(8))]
    assert places == [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)]
    assert all(topo.grid.rank(*p) == r for r, p in enumerate(places))
    assert topo.ranks_of("replica-1") == [4, 5, 6, 7]
    assert topo.ranks_of("replica-0.stage-1") == [2, 3]
    assert topo.ranks_of("rank-5") == [5]
    assert topo.ranks_of("node-1") == [4, 5, 6, 7]
    assert (topo.node_of("replica-1.stage-0"), topo.node_of("replica-0"), topo.node_of("node-1")) == \
        ("node-1", "node-0", "node-1")
    assert TopologySpec(nodes=2, tensor_parallel=4).node_of("rank-3") == "node-1"
    assert TopologySpec(nodes=4, tensor_parallel=4, data_parallel=1, pipeline_parallel=2).node_of("replica-0") is None
    for bad in ("replica-2", "replica-0.stage-2", "rank-8", "node-2", "ingress", "replica_0"):
        with pytest.raises(ValueError):
            topo.ranks_of(bad)


def test_components_name_replicas_and_stages_only_where_there_are_several():
    assert TopologySpec(nodes=2, tensor_parallel=4).component_names() == \
        ["node-0", "node-1", "rank-0", "rank-1", "rank-2", "rank-3"]
    dp = TopologySpec(nodes=2, tensor_parallel=2, data_parallel=2).component_names()
    assert dp == ["node-0", "node-1", "replica-0", "replica-1", "rank-0", "rank-1", "rank-2", "rank-3"]
    pp = TopologySpec(nodes=2, tensor_parallel=1, pipeline_parallel=2).component_names()
    assert pp == ["node-0", "node-1", "replica-0", "replica-0.stage-0", "replica-0.stage-1", "rank-0", "rank-1"]
    for name in TopologySpec(nodes=2, tensor_parallel=2, pipeline_parallel=2, data_parallel=2).component_names():
        assert "_" not in name  # RCAEval splits data.csv columns at '_'
        assert parse_component(name)[0] in {"node", "replica", "stage", "rank"}


def test_layout_record_and_defaults_left_out_of_a_dump():
    topo = TopologySpec(nodes=4, tensor_parallel=2, pipeline_parallel=4)
    layout = topo.grid.record()
    assert (layout["data_parallel"], layout["pipeline_parallel"], layout["tensor_parallel"]) == (1, 4, 2)
    assert layout["ranks"]["rank-5"] == {"replica": 0, "stage": 2, "tp_index": 1, "node": "node-2"}
    assert "pipeline_parallel" not in TopologySpec().model_dump()  # a one-stage scenario dumps as before
    assert topo.model_dump()["pipeline_parallel"] == 4
    assert Target(rank=2).model_dump() == {"node": None, "rank": 2}
    assert Target(replica=1, stage=0).model_dump(exclude_none=True) == {"replica": 1, "stage": 0}


@pytest.mark.parametrize("topology, model, problem", [
    ("{nodes: 2, tensor_parallel: 2, pipeline_parallel: 3}", "{layers: 4}",
     "model.layers (4) must be divisible by topology.pipeline_parallel (3)"),
    ("{nodes: 2, tensor_parallel: 3}", "{layers: 4}", "model.heads (4) must be divisible by topology.tensor_parallel"),
    ("{nodes: 2, tensor_parallel: 64, pipeline_parallel: 64, data_parallel: 2}",
     "{layers: 64, heads: 64, hidden: 4096}", "8192 ranks (at most 4096)"),
    ("{nodes: 2, tensor_parallel: 2, pipeline_parallel: 0}", "{layers: 4}", "pipeline_parallel: must be between 1"),
])
def test_layout_validation_gives_one_line(tmp_path, topology, model, problem):
    path = tmp_path / "s.yaml"
    path.write_text(f"apiVersion: chaosbench/v1alpha1\nkind: Scenario\nmetadata: {{name: t}}\n"
                    f"spec: {{deployment: {{topology: {topology}, model: {model}}}}}\n")
    with pytest.raises(ScenarioInvalid) as exc:
        load_document(path)
    assert any(problem in line for line in exc.value.problems), exc.value.problems
    assert all("\n" not in line for line in exc.value.problems)


# ----------------------------------------------------------------------------- targets


@pytest.mark.parametrize("target, kind, component", [
    ({"node": "node-1"}, "node", "node-1"), ({"rank": 3}, "rank", "rank-3"),
    ({"replica": 1}, "replica", "replica-1"), ({"replica": 0, "stage": 1}, "stage", "replica-0.stage-1"),
])
def test_target_kinds_and_components(target, kind, component):
    t = Target.model_validate(target)
    assert (t.kind, t.component) == (kind, component)


@pytest.mark.parametrize("target, problem", [
    ("{stage: 1}", "a stage needs its replica"),
    ("{rank: 1, replica: 0}", "give exactly one of node, rank or replica"),
    ("{node: node-0, rank: 1}", "give exactly one of node, rank or replica"),
    ("{}", "give exactly one of node, rank or replica"),
])
def test_invalid_target_combinations(tmp_path, target, problem):
    assert any(problem in p for p in scenario_problems(tmp_path, "gpu-power-cap", target))


def test_each_fault_declares_its_target_kinds():
    assert {s.id: s.target_kinds for s in CATALOG} == KINDS
    assert all(s.target_kinds[0] == s.target for s in CATALOG)


@pytest.mark.parametrize("fault", sorted(KINDS))
def test_a_fault_accepts_exactly_its_kinds(tmp_path, fault):
    targets = {"node": "{node: node-1}", "rank": "{rank: 5}", "replica": "{replica: 1}",
               "stage": "{replica: 1, stage: 0}"}
    for kind, target in targets.items():
        found = scenario_problems(tmp_path, fault, target)
        if kind in KINDS[fault]:
            assert found == [], (kind, found)
        else:
            assert len(found) == 1 and found[0].endswith(
                f"spec.faults[0].target: {fault} targets {' or '.join(f'a {k}' for k in KINDS[fault])}, not a {kind}")


@pytest.mark.parametrize("target, topology, problem", [
    ("{replica: 2}", DP2_PP2_TP2, "target.replica: no replica 2 (data_parallel 2)"),
    ("{replica: 0, stage: 2}", DP2_PP2_TP2, "target.stage: no stage 2 (pipeline_parallel 2)"),
    ("{replica: 0, stage: 0}", "{nodes: 2, tensor_parallel: 2, data_parallel: 2}",
     "a replica of one stage is the replica: target replica-0"),
    ("{replica: 0}", "{nodes: 2, tensor_parallel: 4}", "one replica of one stage has no replica or stage components"),
    ("{rank: 8}", DP2_PP2_TP2, "target.rank: no rank 8 (world size 8)"),
])
def test_targets_outside_the_layout(tmp_path, target, topology, problem):
    found = scenario_problems(tmp_path, "gpu-clock-lock", target, topology)
    assert len(found) == 1 and problem in found[0], found


# ----------------------------------------------------------------------------- ground truth and topology.json


def _testbed(topo: TopologySpec, backend: str = "local") -> SimpleNamespace:
    ranks = {f"rank-{r}": layout_rank(topo, r) for r in range(topo.world_size)}
    return SimpleNamespace(backend=backend, engine="mini", ranks=ranks)


LAYERED = {"nodes": 2, "tensor_parallel": 2, "pipeline_parallel": 2, "data_parallel": 2}


@pytest.mark.parametrize("topology, target, node, rank, ranks", [
    (LAYERED, {"node": "node-1"}, "node-1", None, None),
    (LAYERED, {"rank": 5}, "node-1", 5, None),
    (LAYERED, {"replica": 1}, "node-1", None, [4, 5, 6, 7]),
    (LAYERED, {"replica": 0, "stage": 1}, "node-0", None, [2, 3]),
    ({"nodes": 4, "tensor_parallel": 2, "pipeline_parallel": 4}, {"replica": 0}, None, None, list(range(8))),
    ({"nodes": 4, "tensor_parallel": 4, "pipeline_parallel": 2}, {"replica": 0, "stage": 1}, None, None, [4, 5, 6, 7]),
])
def test_ground_truth_of_each_target_kind(topology, target, node, rank, ranks):
    topo = TopologySpec(**topology)
    fault = "cpu-contention" if "node" in target else "gpu-clock-lock"
    step = SimpleNamespace(id=fault, target=Target.model_validate(target))
    truth = ground_truth(_testbed(topo), step, FAULTS[fault], 1.0, 2.0, True)
    assert (truth["component"], truth["node"], truth["rank"], truth.get("ranks")) == \
        (Target.model_validate(target).component, node, rank, ranks)
    assert truth["node"] == topo.node_of(truth["component"])  # the runner's fallback agrees


def test_topology_json_records_the_layout():
    scenario = load_scenario(LAYOUTS / "dp2-pp2-tp2" / "clean.yaml")
    topo = topology_of(scenario, _testbed(scenario.spec.deployment.topology))
    doc = json.loads(json.dumps(topo.to_json()))
    assert doc["components"] == ["ingress", "node-0", "node-1", "replica-0", "replica-1", "replica-0.stage-0",
                                 "replica-0.stage-1", "replica-1.stage-0", "replica-1.stage-1",
                                 *(f"rank-{r}" for r in range(8))]
    assert doc["layout"]["ranks"]["rank-6"] == {"replica": 1, "stage": 1, "tp_index": 0, "node": "node-1"}
    assert Topology.from_json(doc) == topo
    plain = topology_of(load_scenario(REPO / "scenarios" / "clean.yaml"), _testbed(TopologySpec()))
    assert plain.components == ("ingress", "node-0", "node-1", "rank-0", "rank-1", "rank-2", "rank-3")
    assert plain.layout["ranks"]["rank-3"] == {"replica": 0, "stage": 0, "tp_index": 3, "node": "node-1"}


def test_blind_topology_keeps_the_layout_and_names_no_fault(tmp_path):
    from chaosbench.eval.blind import copy_blind

    scenario = load_scenario(LAYOUTS / "dp2-pp2-tp2" / "gpu-power-cap.yaml")
    src = tmp_path / "case"
    src.mkdir()
    (src / "manifest.json").write_text(json.dumps({"backend": "local"}))
    (src / "topology.json").write_text(json.dumps(topology_of(scenario, _testbed(
        scenario.spec.deployment.topology)).to_json()))
    dst = copy_blind(src, tmp_path / "blind", "abc")
    text = (dst / "topology.json").read_text()
    assert json.loads(text)["layout"]["pipeline_parallel"] == 2
    assert not any(fid in text for fid in FAULTS)


# ----------------------------------------------------------------------------- campaigns


CAMPAIGN = """\
apiVersion: chaosbench/v1alpha1
kind: Campaign
metadata: {{name: t}}
spec:
  base: {base}
  seed: 11
  count: 3000
  clean_fraction: 0.0
  compound_fraction: {compound}
  onset: {{min: 22s, max: 28s}}
  duration: {{min: 15s, max: 20s}}
  topologies:
    - {{name: layered, nodes: 2, tensor_parallel: 2, pipeline_parallel: 2, data_parallel: 2}}
    - {{name: plain, nodes: 2, tensor_parallel: 4}}
"""


def _campaign(tmp_path: Path, compound: float = 0.0):
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN.format(base=LAYOUTS / "_model.yaml", compound=compound))
    return load_campaign(path), path


def test_campaign_draws_every_allowed_target_on_layered_topologies_only(tmp_path):
    campaign, _ = _campaign(tmp_path)
    seen: dict[tuple[str, str], Counter] = {}
    for case in plan(campaign):
        f = case.faults[0]
        seen.setdefault((f.id, case.topology), Counter())[f.component] += 1
        assert case.target_kind == Target.model_validate(f.target).kind
    layered = TopologySpec(nodes=2, tensor_parallel=2, pipeline_parallel=2, data_parallel=2)
    for fid, kinds in KINDS.items():
        want_plain = {f"rank-{r}" for r in range(4)} if kinds[0] == "rank" else {"node-0", "node-1"}
        assert set(seen[(fid, "plain")]) == want_plain, fid
        want = {"node": layered.node_names(), "rank": layered.rank_names(), "replica": layered.grid.replica_names(),
                "stage": layered.grid.stage_names()}
        got = seen[(fid, "layered")]
        assert set(got) == {c for k in kinds for c in want[k]}, fid
        per_kind = Counter(Target.model_validate(_target(c)).kind for c in got.elements())
        assert max(per_kind.values()) - min(per_kind.values()) <= 3, (fid, per_kind)  # one kind in len(kinds)


def _target(component: str) -> dict:
    kind, index = parse_component(component)
    if kind == "node":
        return {"node": component}
    return {"rank": index[0]} if kind == "rank" else dict(zip(("replica", "stage"), index))


def test_campaign_cases_are_valid_scenarios_and_compound_faults_do_not_share_ranks(tmp_path):
    campaign, path = _campaign(tmp_path, compound=1.0)
    cases = [c for c in plan(campaign)[:400] if len(c.faults) == 2 and c.topology == "layered"]
    assert len(cases) > 50
    topo = TopologySpec(nodes=2, tensor_parallel=2, pipeline_parallel=2, data_parallel=2)
    for case in cases:
        first, second = (f.component for f in case.faults)
        assert first != second
        if not first.startswith("node-") and not second.startswith("node-"):
            assert not set(topo.ranks_of(first)) & set(topo.ranks_of(second)), (first, second)
    for case in cases[:20]:
        scenario = to_scenario(campaign, case, path)
        assert scenario.spec.deployment.topology == topo
        assert [s.target.component for s in scenario.spec.faults] == [f.component for f in case.faults]


def test_shipped_campaigns_and_scenarios_draw_as_at_a1c7614():
    """The benchmark's splits come from these draws: every case's plan entry, deployment key and resolved
    scenario (sha256), and every shipped scenario file's resolved runs, as snapshot.py wrote them at a1c7614."""
    sys.path.insert(0, str(DRAWS))
    try:
        from snapshot import snapshot
    finally:
        sys.path.remove(str(DRAWS))
    head = json.loads((DRAWS / "head-a1c7614.json").read_text())
    now = snapshot()
    assert len(head["campaigns"]["scenarios/campaigns/benchmark.yaml"]) == 220
    for name, rows in head["campaigns"].items():
        for i, (was, is_) in enumerate(zip(rows, now["campaigns"][name], strict=True)):
            assert is_ == was, f"{name} case {i}"
    assert {k: now["scenarios"].get(k) for k in head["scenarios"]} == head["scenarios"]


# ----------------------------------------------------------------------------- the shipped layouts


def test_layout_scenarios_validate_with_a_clean_case_and_three_classes_of_fault():
    suites = {p.stem.removeprefix("layout-"): p for p in sorted((REPO / "scenarios" / "suites").glob("layout-*.yaml"))}
    assert set(suites) >= {"dp2-tp4", "dp2-pp2-tp2", "pp4-tp2"}
    for name, path in suites.items():
        runs = [s for s, _, _ in expand_suite(load_suite(path), path)]
        assert {p.parent.name for p in suite_scenario_paths(load_suite(path), path)} == {name}
        topo = runs[0].spec.deployment.topology
        assert topo.world_size <= 8 and topo.nodes in (2, 4) and not topo.single_group, name
        assert all(s.spec.deployment.topology == topo and s.spec.deployment.engine == "mini" for s in runs)
        faults = [s.spec.faults[0] for s in runs if s.spec.faults]
        assert len(runs) - len(faults) == 1, name  # one clean case
        assert {FAULTS[f.id].fault_class for f in faults} >= {"GPU", "network"}, name
        assert {FAULTS[f.id].fault_class for f in faults} & {"CPU", "memory"}, name
        gpu = next(f for f in faults if FAULTS[f.id].local_realism == "emulated")
        assert gpu.target.kind in ("stage", "replica"), name
    for path in scenario_files([LAYOUTS]):
        load_document(path)


def test_layouts_campaign_uses_the_layouts_and_draws_replicas_and_stages():
    campaign = load_campaign(REPO / "scenarios" / "campaigns" / "layouts.yaml")
    labels = [t.label for t in campaign.spec.topologies]
    assert {"dp2-tp4", "dp2-pp2-tp2", "pp4-tp2"} <= set(labels)
    kinds = Counter(c.target_kind for c in plan(campaign))
    assert kinds["replica"] and kinds["stage"] and kinds["rank"] and kinds["node"]


def test_a_stage_case_that_never_injected_still_names_its_target(tmp_path):
    from chaosbench.case import CaseWriter, read_ground_truth
    from chaosbench.runner import _ensure_ground_truth

    scenario = load_scenario(LAYOUTS / "pp4-tp2" / "gpu-clock-lock.yaml")  # replica-0.stage-2: ranks 4, 5 on node-2
    writer = CaseWriter(tmp_path / "run" / "cases" / "abc123")
    _ensure_ground_truth(writer, scenario, 1.0)
    truth = read_ground_truth(writer.path)
    assert (truth["component"], truth["node"], truth["rank"], truth["ranks"], truth["verified"]) == \
        ("replica-0.stage-2", "node-2", None, [4, 5], False)


def test_a_layout_scenario_job_names_its_target_kind_and_layout():
    from chaosbench.campaign import _component
    from chaosbench.jobs import scenario_jobs

    job = scenario_jobs([load_scenario(LAYOUTS / "dp2-pp2-tp2" / "gpu-power-cap.yaml")])[0]
    assert (job.draw["target_kind"], job.draw["topology"]) == ("stage", "2n-dp2-pp2-tp2")
    assert job.draw["faults"][0]["target"] == {"replica": 0, "stage": 1}
    assert _component(job.draw["faults"][0]["target"]) == "replica-0.stage-1"  # the dataset card's name for it
    plain = scenario_jobs([load_scenario(REPO / "scenarios" / "gpu-power-cap.yaml")])[0]
    assert (plain.draw["target_kind"], plain.draw["topology"]) == ("rank", "2n-dp1-tp4")
