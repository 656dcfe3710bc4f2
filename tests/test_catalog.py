"""The fault ids of FAULTS.md, the catalog and the shipped scenarios are one set."""

from __future__ import annotations

import re

import pytest

from chaosbench.errors import InputInvalid
from chaosbench.faults.catalog import CATALOG, FAULT_IDS, FAULTS, get_fault
from chaosbench.scenario import load_scenario, scenario_files


def test_catalog_matches_faults_md(shared):
    table_ids = re.findall(r"^\| ([a-z0-9-]+) \|", (shared / "design" / "FAULTS.md").read_text(), re.M)
    assert set(table_ids) - {"id"} == set(FAULT_IDS)
    assert len(FAULT_IDS) == 11


def test_one_scenario_per_fault_and_a_clean_one(repo):
    seen: dict[str, list[str]] = {}
    for f in scenario_files([repo / "scenarios"]):
        if "suites" in f.parts or "campaigns" in f.parts:
            continue
        sc = load_scenario(f)
        ids = [s.id for s in sc.spec.faults] or ["clean"]
        for i in ids:
            seen.setdefault(i, []).append(f.name)
    assert set(seen) == set(FAULT_IDS) | {"clean"}


def test_every_entry_is_complete():
    for spec in CATALOG:
        assert spec.local_realism in {"real", "emulated"}
        assert spec.target in {"node", "rank"}
        assert spec.verify_signal and spec.local_mechanism and spec.cluster_mechanism and spec.recovery
        spec.params()  # defaults alone are valid


def test_emulated_faults_are_the_device_layer_ones():
    emulated = {s.id for s in CATALOG if s.local_realism == "emulated"}
    assert emulated == {"gpu-power-cap", "gpu-clock-lock", "gpu-memory-pressure", "gpu-xid-error"}


def test_unknown_fault_suggests():
    with pytest.raises(InputInvalid, match="did you mean 'nccl-hang'"):
        get_fault("nccl-hnag")
    assert FAULTS["nccl-hang"].fault_class == "NCCL"


def test_no_shipped_fault_id_is_named_in_harness_outside_its_module(repo):
    """A fault is one module: the rest of harness/ reads its spec (ids in comments count too)."""
    named = []
    for path in sorted((repo / "harness").rglob("*")):
        if path.suffix not in {".py", ".j2", ".yaml", ".yml"} or (repo / "harness" / "faults") in path.parents:
            continue
        text = path.read_text()
        named += [f"{path.relative_to(repo)}: {fid}" for fid in FAULT_IDS if fid in text]
    assert named == []


def test_every_fault_declares_what_the_harness_reads():
    for spec in CATALOG:
        assert spec.key_metrics and all(k == k.lower() for k in spec.key_metrics), spec.id
        assert set(spec.sampling.ranges) | set(spec.sampling.choices) <= set(spec.params.model_fields), spec.id
    assert {s.id for s in CATALOG if "device-layer" in s.local_needs} == {
        s.id for s in CATALOG if s.local_realism == "emulated"}
