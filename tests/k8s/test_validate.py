"""The offline validator rejects what a cluster would reject (or silently prune)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from chaosbench.backends.k8s.render import render_all
from chaosbench.backends.k8s.validate import check_rendered, validate_object
from chaosbench.errors import InputInvalid
from chaosbench.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name in ("network-delay", "cpu-contention"):
        rendered = render_all(load_scenario(REPO / "scenarios" / f"{name}.yaml"), tmp_path_factory.mktemp(name))
        for _, obj in rendered.documents():
            out.setdefault(obj["kind"], obj)
    return out


def test_rendered_objects_are_valid(docs):
    for kind, obj in docs.items():
        assert validate_object(obj) == [], kind


@pytest.mark.parametrize(
    "kind, path, value, needle",
    [
        ("RayService", ("spec", "rayClusterConfig", "headGroupSpec", "bogus"), 1, "bogus"),
        ("RayService", ("spec", "rayClusterConfig", "workerGroupSpecs", 0, "replicas"), "one", "not of type"),
        ("RayService", ("spec", "serveConfigV2"), "applications: 3\n", "serveConfigV2"),
        ("RayService", ("spec", "rayClusterConfig", "headGroupSpec", "template", "spec", "containers", 0, "imag"),
         "x", "imag"),
        ("NetworkChaos", ("spec", "action"), "slow", "slow"),
        ("NetworkChaos", ("spec", "delay", "latncy"), "1s", "latncy"),
        ("StressChaos", ("spec", "stressors", "cpu", "workers"), 9000, "9000"),
        ("StressChaos", ("spec", "mode"), "every", "every"),
        ("PodMonitor", ("spec", "podMetricsEndpoints", 0, "interval"), "1 sec", "1 sec"),
        ("DaemonSet", ("spec", "template", "spec", "hostPid"), True, "hostPid"),
        ("Job", ("spec", "backoffLimit"), "zero", "zero"),
    ],
)
def test_validator_catches_mistakes(docs, kind, path, value, needle):
    obj = copy.deepcopy(docs[kind])
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    problems = validate_object(obj)
    assert problems and any(needle in p for p in problems), problems


@pytest.mark.parametrize(
    "kind, edit, needle",
    [
        ("NetworkChaos", lambda s: s.pop("target"), "spec.target: required for direction 'both'"),
        ("NetworkChaos", lambda s: s.pop("delay"), "spec.delay: required for action 'delay'"),
        ("StressChaos", lambda s: s.pop("stressors"), "spec.stressors: give at least one stressor"),
    ],
)
def test_chaos_mesh_webhook_rules(docs, kind, edit, needle):
    obj = copy.deepcopy(docs[kind])
    edit(obj["spec"])
    assert needle in validate_object(obj)


def test_missing_required_field(docs):
    obj = copy.deepcopy(docs["StressChaos"])
    del obj["spec"]["selector"]
    assert any("selector" in p for p in validate_object(obj))


def test_unknown_kind_and_non_object():
    assert validate_object({"apiVersion": "example.com/v1", "kind": "Nope", "metadata": {"name": "x"}})
    assert validate_object(["not", "an", "object"])


def test_check_rendered_lists_every_problem(tmp_path):
    rendered = render_all(load_scenario(REPO / "scenarios" / "cpu-contention.yaml"), tmp_path)
    broken = dict(rendered.files)
    broken["faults/00-cpu-contention.yaml"] = broken["faults/00-cpu-contention.yaml"].replace("mode: all", "mode: x")
    broken["manifests/00-namespace.yaml"] += "spec:\n  finalisers: []\n"
    with pytest.raises(InputInvalid) as err:
        check_rendered(type(rendered)(settings=rendered.settings, files=broken))
    text = str(err.value)
    assert "faults/00-cpu-contention.yaml" in text and "manifests/00-namespace.yaml" in text
