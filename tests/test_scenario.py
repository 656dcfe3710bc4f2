"""Scenario schema: the shipped files are valid, and every kind of bad input gives one clear line per problem."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from chaosbench.errors import ScenarioInvalid
from chaosbench.scenario import (
    Scenario,
    expand_suite,
    json_schema,
    load_document,
    load_scenario,
    load_suite,
    parse_document,
)
from chaosbench.types import format_duration, parse_duration

GOOD = """\
apiVersion: chaosbench/v1alpha1
kind: Scenario
metadata: {name: t}
spec:
  workload: {duration: 60s, warmup: 5s}
  faults:
    - id: gpu-power-cap
      target: {rank: 1}
      params: {watts: 200}
      start: 20s
      duration: 10s
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def problems(path: Path) -> list[str]:
    with pytest.raises(ScenarioInvalid) as exc:
        load_document(path)
    return exc.value.problems


def test_good_scenario_defaults_and_round_trip(tmp_path):
    sc = load_scenario(write(tmp_path, GOOD))
    step = sc.spec.faults[0]
    assert (step.id, step.target.component, step.params.watts, step.start, step.duration) == (
        "gpu-power-cap", "rank-1", 200, 20.0, 10.0)
    assert sc.spec.deployment.topology.rank_names() == ["rank-0", "rank-1", "rank-2", "rank-3"]
    assert parse_document(sc.dump(), "again") == sc


def test_rank_placement_is_contiguous(tmp_path):
    topo = load_scenario(write(tmp_path, GOOD)).spec.deployment.topology
    assert [topo.rank_node(r) for r in range(4)] == ["node-0", "node-0", "node-1", "node-1"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("kind: Scenario\nmetadata: {name: x\n", "YAML syntax error: line"),
        (GOOD.replace("metadata: {name: t}", "metadata: {name: t, colour: red}"), "metadata.colour: unknown key"),
        (GOOD.replace("gpu-power-cap", "gpu-power-cop"),
         "spec.faults[0].id: unknown fault id 'gpu-power-cop' (did you mean 'gpu-power-cap'?)"),
        (GOOD.replace("duration: 60s", "duration: 60x"), "spec.workload.duration: '60x' is not a duration"),
        (GOOD.replace("duration: 60s", "duration: 60"), "spec.workload.duration: must be a duration string"),
        (GOOD.replace("watts: 200", "watts: 20"), "spec.faults[0].params.watts: must be between 50 and 1000"),
        (GOOD.replace("watts: 200", "watts: -5"), "spec.faults[0].params.watts: must be between 50 and 1000"),
        (GOOD.replace("watts: 200", "volts: 2"), "spec.faults[0].params.volts: unknown key"),
        (GOOD.replace("{duration: 60s, warmup: 5s}", "{users: -3}"), "spec.workload.users: must be between 1 and"),
        (GOOD.replace("rank: 1", "rank: 7"), "spec.faults[0].target.rank: no rank 7 (world size 4)"),
        (GOOD.replace("{rank: 1}", "{node: node-1}"), "spec.faults[0].target: gpu-power-cap targets a rank"),
        (GOOD.replace("start: 20s", "start: 55s"), "spec.faults[0]: ends after the load"),
        (GOOD.replace("chaosbench/v1alpha1", "chaosbench/v2"), "apiVersion: must be 'chaosbench/v1alpha1'"),
        (GOOD.replace("kind: Scenario", "kind: Experiment"), "kind: must be 'Scenario' or 'Suite'"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("", "empty file"),
        ("# only a comment\n", "empty file"),
    ],
)
def test_bad_input_gives_located_one_line_problems(tmp_path, text, expected):
    path = write(tmp_path, text)
    found = problems(path)
    assert any(expected in line for line in found), found
    assert all(line.startswith(str(path) + ": ") and "\n" not in line for line in found)


def test_several_problems_are_all_reported(tmp_path):
    text = GOOD.replace("watts: 200", "watts: 20, volts: 1").replace("duration: 60s", "duration: 1 minute")
    found = problems(write(tmp_path, text))
    assert len(found) == 3


def test_binary_file(tmp_path):
    p = tmp_path / "b.yaml"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff")
    assert problems(p) == [f"{p}: not a text file (binary content)"]


def test_missing_file(tmp_path):
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: file not found"]


def test_include_merges_and_detects_cycles(tmp_path):
    write(tmp_path, "spec:\n  workload: {users: 9, duration: 60s, warmup: 5s}\n", "_base.yaml")
    sc = load_scenario(write(tmp_path, GOOD.replace("apiVersion:", "include: _base.yaml\napiVersion:")))
    assert sc.spec.workload.users == 9
    write(tmp_path, "include: b.yaml\n", "a.yaml")
    write(tmp_path, "include: a.yaml\n", "b.yaml")
    assert "include: cycle" in problems(tmp_path / "a.yaml")[0]


def test_suite_expansion_globs_seeds_and_overrides(tmp_path):
    write(tmp_path, GOOD, "one.yaml")
    write(tmp_path, GOOD.replace("name: t", "name: u"), "two.yaml")
    suite_path = write(tmp_path, """\
        apiVersion: chaosbench/v1alpha1
        kind: Suite
        metadata: {name: s}
        spec:
          scenarios: ["*.yaml"]
          repetitions: 2
          seeds: [7, 8]
          overrides: {workload: {users: 3}}
        """, "suite.yaml")
    suite = load_suite(suite_path)
    runs = expand_suite(suite, suite_path)
    assert [(s.metadata.name, rep, seed) for s, rep, seed in runs] == [("t", 0, 7), ("t", 1, 8), ("u", 0, 7), ("u", 1, 8)]
    assert all(s.spec.workload.users == 3 for s, _, _ in runs)


def test_suite_with_wrong_seed_count_and_missing_scenario(tmp_path):
    p = write(tmp_path, """\
        apiVersion: chaosbench/v1alpha1
        kind: Suite
        metadata: {name: s}
        spec: {scenarios: [missing.yaml], repetitions: 2, seeds: [1]}
        """)
    assert any("seeds has 1 entries for 2 repetitions" in line for line in problems(p))
    p2 = write(tmp_path, p.read_text().replace("seeds: [1]", "seeds: [1, 2]"), "s2.yaml")
    with pytest.raises(ScenarioInvalid, match="no scenario file matches 'missing.yaml'"):
        expand_suite(load_suite(p2), p2)


def test_durations():
    assert parse_duration("250ms") == 0.25 and parse_duration("5m") == 300 and parse_duration("1.5h") == 5400
    assert format_duration(300) == "5m" and format_duration(0.25) == "250ms" and format_duration(30) == "30s"
    for bad in ("5", "5 minutes", "-3s", "s", True, 5):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_json_schema_covers_every_fault():
    schema = json.dumps(json_schema())
    from chaosbench.faults.catalog import FAULT_IDS

    assert all(f'"{fid}"' in schema for fid in FAULT_IDS)
    assert '"additionalProperties": false' in schema
    assert Scenario.model_json_schema(by_alias=True)["properties"]["apiVersion"]


def test_emulated_gpu_faults_are_refused_for_the_local_vllm_engine(tmp_path):
    text = GOOD.replace("spec:\n", "spec:\n  deployment: {engine: vllm, topology: {nodes: 1, tensor_parallel: 2}}\n")
    found = problems(write(tmp_path, text))
    assert any("spec.faults[0].id: gpu-power-cap: emulated GPU fault" in line for line in found), found
