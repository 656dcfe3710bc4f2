"""The fault ids of FAULTS.md, the catalog and the shipped scenarios are one set."""

from __future__ import annotations

import re

import pytest

from harness.faults.catalog import CATALOG, FAULT_IDS, FAULTS, get_fault
from harness.errors import InputInvalid
from harness.scenario import load_scenario, scenario_files


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
