"""Campaigns: the sampler (reproducible, independent per index, full ranges, held fractions, stable splits),
the case scenarios, the loader's one-line errors, the shipped campaigns, the dataset card and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from chaosbench.campaign import (
    Campaign,
    deployment_key,
    draw,
    load_campaign,
    plan,
    split_of,
    to_scenario,
    write_dataset_card,
)
from chaosbench.errors import InputInvalid, ScenarioInvalid
from chaosbench.faults.catalog import CATALOG, FAULTS, SAMPLING
from chaosbench.rundir import RunDir, parse_labels
from chaosbench.scenario import Scenario

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "scenarios" / "campaigns" / "mini.yaml"
BENCHMARK = REPO / "scenarios" / "campaigns" / "benchmark.yaml"

CAMPAIGN = """\
apiVersion: chaosbench/v1alpha1
kind: Campaign
metadata: {name: t}
spec:
  base: _base.yaml
  seed: 7
  count: 40
  compound_fraction: 0.0
  onset: {min: 35s, max: 45s}
  duration: {min: 15s, max: 25s}
  topologies: [{nodes: 2, tensor_parallel: 4}, {nodes: 2, tensor_parallel: 2}]
"""


@pytest.fixture
def campaign_file(tmp_path: Path) -> Path:
    # the shipped base with the timeline pinned, so these tests do not follow its durations
    (tmp_path / "_base.yaml").write_text(f"include: {REPO / 'scenarios' / '_base.yaml'}\n"
                                         "spec: {workload: {warmup: 10s, duration: 80s}}\n")
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN)
    return path


def with_spec(campaign: Campaign, **changes) -> Campaign:
    return campaign.model_copy(update={"spec": campaign.spec.model_copy(update=changes)})


def primary(case) -> str:
    return case.faults[0].id if case.faults else "clean"


# ----------------------------------------------------------------------------- the draw


def test_same_seed_same_plan_other_seed_other_plan(campaign_file):
    c = load_campaign(campaign_file)
    a, b = plan(c), plan(load_campaign(campaign_file))
    assert [x.to_json() for x in a] == [x.to_json() for x in b]
    other = plan(with_spec(c, seed=8))
    assert [x.to_json() for x in other] != [x.to_json() for x in a]


def test_case_i_does_not_depend_on_count(campaign_file):
    c = load_campaign(campaign_file)
    short, long = plan(with_spec(c, count=25)), plan(with_spec(c, count=300))
    assert [x.to_json() for x in short] == [x.to_json() for x in long[:25]]
    assert draw(c, 123).to_json() == long[123].to_json()


def test_every_allowed_target_and_the_whole_parameter_range_are_reachable(campaign_file):
    c = with_spec(load_campaign(campaign_file), count=4000, clean_fraction=0.0)
    targets: dict[tuple[str, str], set[str]] = {}
    values: dict[tuple[str, str], list] = {}
    for case in plan(c):
        f = case.faults[0]
        targets.setdefault((f.id, case.topology), set()).add(f.component)
        for k, v in f.params.items():
            values.setdefault((f.id, k), []).append(v)
        assert FAULTS[f.id].params.model_validate(f.params)  # inside the parameter model's bounds
    for spec in CATALOG:
        for topo, ranks in (("n2-tp4", 4), ("n2-tp2", 2)):
            want = {f"rank-{r}" for r in range(ranks)} if spec.target == "rank" else {"node-0", "node-1"}
            assert targets[(spec.id, topo)] == want, (spec.id, topo)
        sampling = SAMPLING[spec.id]
        for name, r in sampling.ranges.items():
            seen = values[(spec.id, name)]
            lo, hi = sorted((r.mild, r.severe))
            assert lo <= min(seen) and max(seen) <= hi, (spec.id, name)
            positions = [r.position(v) for v in seen]  # 0 at the mild end, 1 at the severe end
            assert min(positions) < 0.02 and max(positions) > 0.98, (spec.id, name)
            if isinstance(r.step, int) and (hi - lo) / r.step <= 20:  # every value of a short range occurs
                assert set(seen) == set(range(int(lo), int(hi) + 1, r.step)), (spec.id, name)
            else:  # no gap wider than a few steps anywhere in the range
                grid = sorted(set(seen))
                assert max(b - a for a, b in pairwise(grid)) <= 0.1 * (hi - lo), (spec.id, name)
        for name, options in sampling.choices.items():
            assert set(values[(spec.id, name)]) == set(options)


def test_intensity_spans_zero_to_one_for_graded_faults():
    for fid, s in SAMPLING.items():
        mild = {k: r.value(0.0) for k, r in s.ranges.items()}
        severe = {k: r.value(1.0) for k, r in s.ranges.items()}
        FAULTS[fid].params.model_validate(mild)
        FAULTS[fid].params.model_validate(severe)
        if any(r.weight for r in s.ranges.values()):
            assert s.intensity(mild) == 0.0 and s.intensity(severe) == 1.0, fid
            assert 0 < s.intensity({k: r.value(0.5) for k, r in s.ranges.items()}) < 1, fid
        else:
            assert s.intensity({}) == 1.0  # an outage (hung rank, failed worker)


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.35, 1.0])
def test_clean_fraction_is_held_for_every_prefix(campaign_file, fraction):
    c = with_spec(load_campaign(campaign_file), count=1000, clean_fraction=fraction)
    clean = [not case.faults for case in plan(c)]
    for n in (10, 37, 100, 333, 1000):
        assert abs(sum(clean[:n]) - fraction * n) <= 2, n


def test_fault_mix_follows_the_weights(campaign_file):
    c = with_spec(load_campaign(campaign_file), count=600, clean_fraction=0.0,
                  faults={"nccl-hang": 3.0, "cpu-contention": 1.0, "network-delay": 0.0})
    counts = Counter(primary(x) for x in plan(c))
    assert set(counts) == {"nccl-hang", "cpu-contention"}
    assert abs(counts["nccl-hang"] - 450) <= 2 and abs(counts["cpu-contention"] - 150) <= 2


def test_splits_are_stable_and_hold_the_dev_share(campaign_file):
    c = with_spec(load_campaign(campaign_file), count=3000)
    splits = [x.split for x in plan(c)]
    assert splits[:40] == [x.split for x in plan(load_campaign(campaign_file))]
    assert all(split_of(7, i, 0.3) == s for i, s in enumerate(splits))
    assert abs(splits.count("dev") / len(splits) - 0.3) < 0.03
    assert {x.split for x in plan(with_spec(c, count=50, dev_share=0.0))} == {"test"}
    assert {x.split for x in plan(with_spec(c, count=50, dev_share=1.0))} == {"dev"}
    # the split does not follow the fault: both splits hold every fault
    per_split = {s: {primary(x) for x in plan(c) if x.split == s} for s in ("dev", "test")}
    assert per_split["dev"] == per_split["test"] == {*FAULTS, "clean"}


def test_clean_and_faulty_cases_draw_the_same_windows_and_load(campaign_file):
    c = load_campaign(campaign_file)
    faulty, clean = plan(with_spec(c, clean_fraction=0.0)), plan(with_spec(c, clean_fraction=1.0))
    assert all(not x.faults and x.intensity is None and x.target_kind is None for x in clean)
    for f, k in zip(faulty, clean):
        assert (f.onset, f.duration, f.workload) == (k.onset, k.duration, k.workload)
        assert (f.faults[0].start, f.faults[0].duration) == (f.onset, f.duration)
        assert 35 <= f.onset <= 45 and 15 <= f.duration <= 25


def test_salt_changes_what_a_detector_sees_not_the_answer(campaign_file):
    c = load_campaign(campaign_file)
    for i in range(20):
        a, b = draw(c, i), draw(c, i, salt=991)
        assert [(f.id, f.target, f.params) for f in a.faults] == [(f.id, f.target, f.params) for f in b.faults]
        assert (a.split, a.topology, a.intensity) == (b.split, b.topology, b.intensity)
    assert [draw(c, i).onset for i in range(20)] != [draw(c, i, salt=991).onset for i in range(20)]


def test_compound_cases_overlap_on_two_components(campaign_file):
    c = with_spec(load_campaign(campaign_file), count=300, clean_fraction=0.0, compound_fraction=1.0)
    cases = plan(c)
    assert sum(len(x.faults) == 2 for x in cases) >= 290
    for x in cases:
        if len(x.faults) == 2:
            a, b = x.faults
            assert a.id != b.id and a.component != b.component
            assert a.start <= b.start < a.start + a.duration  # overlapping in time
            assert b.start + b.duration <= 45 + 25 + 1e-9
    half = with_spec(c, compound_fraction=0.5, count=1000)
    share = sum(len(x.faults) == 2 for x in plan(half)) / 1000
    assert 0.45 < share < 0.55


# ----------------------------------------------------------------------------- case scenarios


def test_to_scenario_gives_valid_runnable_scenarios(campaign_file):
    c = with_spec(load_campaign(campaign_file), compound_fraction=0.3)
    for case in plan(c):
        sc = to_scenario(c, case, campaign_file)
        assert isinstance(sc, Scenario) and sc.problems() == []
        assert sc.metadata.name == f"campaign-t-{case.index}"
        assert [(s.id, s.target.component, s.start, s.duration) for s in sc.spec.faults] == \
            [(f.id, f.component, f.start, f.duration) for f in case.faults]
        assert (sc.spec.nominal_inject, sc.spec.nominal_duration) == (case.onset, case.duration)
        topo = sc.spec.deployment.topology
        assert f"n{topo.nodes}-tp{topo.tensor_parallel}" == case.topology and topo.data_parallel == 1
        assert sc.spec.workload.seed == case.workload["seed"]
        assert sc.spec.steady_state and sc.spec.stop_conditions  # the base's sections are kept
        for step, f in zip(sc.spec.faults, case.faults):
            assert step.params.model_dump() | f.params == step.params.model_dump()


def test_deployment_key_groups_by_topology_not_workload(campaign_file):
    c = load_campaign(campaign_file)
    keys: dict[str, set[str]] = {}
    for case in plan(c):
        keys.setdefault(case.topology, set()).add(deployment_key(to_scenario(c, case, campaign_file)))
    assert all(len(v) == 1 for v in keys.values()) and len({k for v in keys.values() for k in v}) == 2


BAD = {
    "unknown fault id": ("  count: 40\n", "  count: 40\n  faults: {nccl-hnag: 1}\n",
                         "c.yaml: spec.faults.nccl-hnag: unknown fault id 'nccl-hnag' (did you mean 'nccl-hang'?)"),
    "unknown key": ("  count: 40\n", "  count: 40\n  colour: red\n", "c.yaml: spec.colour: unknown key"),
    "fraction": ("  count: 40\n", "  count: 40\n  clean_fraction: 1.5\n",
                 "c.yaml: spec.clean_fraction: must be between 0 and 1"),
    "window": ("onset: {min: 35s, max: 45s}", "onset: {min: 40s, max: 60s}",
               "c.yaml: spec.duration.max: the latest window ends at 85s"),
    "warm-up": ("onset: {min: 35s, max: 45s}", "onset: {min: 5s, max: 40s}",
                "c.yaml: spec.onset.min: starts during the base's warm-up"),
    "reversed": ("duration: {min: 15s, max: 25s}", "duration: {min: 30s, max: 20s}",
                 "c.yaml: spec.duration: min (30) is greater than max (20)"),
    "tp": ("tensor_parallel: 2}", "tensor_parallel: 3}",
           "c.yaml: spec.topologies[1]: spec.deployment: model.heads (4) must be divisible"),
    "nodes": ("tensor_parallel: 2}", "tensor_parallel: 2}, {nodes: 3, tensor_parallel: 2}",
              "c.yaml: spec.topologies[2]: 3 nodes for 2 ranks"),
    "base": ("base: _base.yaml", "base: nope.yaml", "c.yaml: spec.base: no such file 'nope.yaml'"),
    "bare number": ("onset: {min: 35s, max: 45s}", "onset: {min: 35, max: 40s}",
                    "c.yaml: spec.onset.min: must be a duration string"),
    "kind": ("kind: Campaign", "kind: Suite", "c.yaml: kind: expected a Campaign, got 'Suite'"),
    "no window": ("  duration: {min: 15s, max: 25s}\n", "", "c.yaml: spec.duration: required"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_invalid_campaign_files_give_one_line_errors(campaign_file, name):
    old, new, want = BAD[name]
    campaign_file.write_text(CAMPAIGN.replace(old, new))
    with pytest.raises(ScenarioInvalid) as err:
        load_campaign(campaign_file)
    problems = err.value.problems
    assert all("\n" not in p and p.startswith(str(campaign_file)) for p in problems), problems
    assert any(want in p for p in problems), problems


# ----------------------------------------------------------------------------- shipped campaigns


def test_benchmark_campaign_meets_the_published_counts():
    c = load_campaign(BENCHMARK)
    cases = plan(c)
    assert len(cases) >= 150
    kinds = Counter(primary(x) for x in cases)
    assert kinds["clean"] >= 30 and set(kinds) == {*FAULTS, "clean"}
    for spec in CATALOG:
        assert kinds[spec.id] >= 8, spec.id
        for t in c.spec.topologies:  # spread over every target on every topology
            hit = {x.faults[0].component for x in cases if primary(x) == spec.id and x.topology == t.label}
            assert hit == {f"rank-{r}" for r in range(t.tensor_parallel)} if spec.target == "rank" \
                else hit == {f"node-{n}" for n in range(t.nodes)}, (spec.id, t.label)
    assert Counter(x.split for x in cases)["dev"] >= 30
    assert any(len(x.faults) == 2 for x in cases)
    bins = Counter(min(int(x.intensity * 4), 3) for x in cases if x.intensity is not None and x.intensity < 1)
    assert all(bins[b] >= 10 for b in range(4)), bins  # detectability varies from barely visible to severe


def test_mini_campaign_is_a_short_first_try():
    c = load_campaign(MINI)
    cases = plan(c)
    assert len(cases) <= 20
    assert sum(not x.faults for x in cases) >= 3
    scenarios = [to_scenario(c, x, MINI) for x in cases]
    assert len({deployment_key(s) for s in scenarios}) == 1  # one testbed serves it
    classes = {FAULTS[f.id].fault_class for x in cases for f in x.faults}
    assert len(classes) >= 4, classes
    assert all(s.spec.deployment.backend == "local" and s.spec.workload.duration <= 90 for s in scenarios)


# ----------------------------------------------------------------------------- dataset card


def test_dataset_card_counts_a_hand_written_run(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({
        "kind": "campaign", "source": "scenarios/campaigns/mini.yaml", "seed": 5, "started": 1.0,
        "argv": ["chaosbench", "run", "scenarios/campaigns/mini.yaml"], "chaosbench_git_sha": "abc123"}))
    (tmp_path / "plan.json").write_text(json.dumps([{"index": i} for i in range(5)]))

    def label(i, split, status, faults, intensity, kind):
        return {"case_id": f"{i:012x}", "index": i, "split": split, "status": status, "reason": "",
                "ground_truth": {}, "faults": faults, "intensity": intensity, "target_kind": kind,
                "topology": "n2-tp4"}

    hang = {"id": "nccl-hang", "target": {"rank": 1}, "params": {}, "start": 40.0, "duration": 20.0}
    clock = {"id": "gpu-clock-lock", "target": {"rank": 2}, "params": {"sm_clock_mhz": 900}, "start": 41.0,
             "duration": 15.0}
    cpu = {"id": "cpu-contention", "target": {"node": "node-1"}, "params": {"workers": 2}, "start": 45.0,
           "duration": 10.0}
    rows = [label(0, "dev", "completed", [hang], 1.0, "rank"),
            label(1, "test", "completed", [clock, cpu], 0.3, "rank"),
            label(2, "test", "not-verified", [cpu], 0.6, "node"),
            label(3, "test", "completed", [], None, None),
            label(4, "dev", "failed", [clock], 0.1, "rank")]
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    md, js = write_dataset_card(tmp_path)
    card = json.loads(js.read_text())
    assert card["cases"] == 5 and card["planned"] == 5 and card["compound"] == 1
    assert card["per_fault"] == {"clean": 1, "cpu-contention": 2, "gpu-clock-lock": 2, "nccl-hang": 1}
    assert card["per_fault_split"]["gpu-clock-lock"] == {"dev": 1, "test": 1}
    assert card["per_target"] == {"clean": 1, "cpu-contention@node-1": 2, "gpu-clock-lock@rank-2": 2,
                                  "nccl-hang@rank-1": 1}
    assert card["per_split"] == {"dev": 2, "test": 3}
    assert card["status"] == {"completed": 3, "failed": 1, "not-verified": 1}
    assert card["per_intensity"] == {"0.00-0.25": 1, "0.25-0.50": 1, "0.50-0.75": 1, "0.75-1.00": 1, "none": 1}
    assert card["per_target_kind"] == {"node": 1, "none": 1, "rank": 3}
    assert card["realism"] == {"emulated": 2, "none": 1, "real": 3}
    assert card["realism_by_fault"]["gpu-clock-lock"] == "emulated"
    assert card["command"] == "chaosbench run scenarios/campaigns/mini.yaml"
    assert card["chaosbench"]["git_sha"] == "abc123"
    assert card["machine"]["cpus"] and card["machine"]["kernel"] and card["machine"]["python"]
    text = md.read_text()
    assert "| gpu-clock-lock | 2 | 1 | 1 | emulated |" in text and "not-verified 1" in text
    assert "`chaosbench run scenarios/campaigns/mini.yaml`" in text


def test_dataset_card_refuses_a_bad_labels_file(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "plan.json").write_text("[]")
    (tmp_path / "labels.jsonl").write_text('{"case_id": "a1", "index": 0}\nnot json\n')
    with pytest.raises(InputInvalid, match="labels.jsonl: line 2: not JSON"):
        write_dataset_card(tmp_path)


@pytest.mark.parametrize(("text", "problem"), [
    ('{"case_id": "a1"}\n[1]\n', "line 2: not a JSON object"),
    ('{"case_id": "a1"}\n{"index": 1}\n', "line 2: no valid case_id"),
    ('{"case_id": "../x"}\n', "line 1: no valid case_id"),
    ('{"case_id": "a1"}\n\n{"case_id": "a1"}\n', "line 3: case_id a1 listed twice"),
    ('{"case_id": "a1"}\n{"case_id": "b', "line 2: not JSON"),
])
def test_labels_reader_names_the_bad_line(text, problem):
    with pytest.raises(InputInvalid, match=f"^run/labels.jsonl: {re.escape(problem)}"):
        parse_labels(text, "run/labels.jsonl")


def test_run_dir_skips_only_a_torn_last_line(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_labels() == []
    run.labels_file.write_text('{"case_id": "a1"}\n{"case_id": "b2"}\n{"case_id": "c')
    assert [r["case_id"] for r in run.read_labels()] == ["a1", "b2"]
    run.labels_file.write_text('{"case_id": "a1"}\n{"case_id": "c\n{"case_id": "b2"}\n')
    with pytest.raises(InputInvalid, match="labels.jsonl: line 2: not JSON"):
        run.read_labels()


# ----------------------------------------------------------------------------- CLI


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from chaosbench.cli import main; main()", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def test_cli_campaign_plan_json_and_table():
    r = cli("campaign", "plan", str(MINI), "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["index"] for x in rows] == list(range(len(rows)))
    assert rows == [x.to_json() for x in plan(load_campaign(MINI))]
    assert {"index", "case_id", "split", "faults", "topology", "workload"} <= set(rows[0])
    assert all(x["case_id"] is None for x in rows)
    r = cli("campaign", "plan", str(MINI))
    assert r.returncode == 0 and f"{len(rows)} cases:" in r.stdout and "(clean)" in r.stdout


def test_cli_validate_and_list_know_campaigns(tmp_path):
    r = cli("validate", "scenarios/campaigns")
    assert r.returncode == 0 and "Campaign benchmark" in r.stdout and "Campaign mini" in r.stdout, r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINI.read_text().replace("base: ../_base.yaml", f"base: {REPO}/scenarios/_base.yaml")
                   .replace("nccl-hang: 1", "nccl-hnag: 1"))
    r = cli("validate", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    want = f"error: {bad}: spec.faults.nccl-hnag: unknown fault id 'nccl-hnag' (did you mean 'nccl-hang'?)"
    assert r.stderr.strip().splitlines() == [want]
    r = cli("scenarios", "list", "--json")
    kinds = {x["name"]: x["kind"] for x in json.loads(r.stdout)}
    assert kinds["benchmark"] == kinds["mini"] == "Campaign"
