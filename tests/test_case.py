"""Case directory: atomic commit, no ground truth through CaseView."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chaosbench.case import CaseView, CaseWriter, Topology, atomic_write_json, find_cases, read_ground_truth
from chaosbench.errors import CaseInvalid

TOPO = Topology(backend="local", engine="mini", nodes=("node-0", "node-1"), ranks=("rank-0", "rank-1"),
                rank_node={"rank-0": "node-0", "rank-1": "node-1"}, components=("ingress", "node-0", "rank-0"))


def make_case(root, name="c1", fault="nccl-hang"):
    w = CaseWriter(root / name)
    w.event("deploy", "start")
    w.event("fault.inject", "point", detail={"fault": fault})
    w.write_json("topology.json", TOPO.to_json())
    w.write_inject_time(1700000040.0)
    w.write_text("data.csv", "time,ingress_latency,rank-1_DCGM_FI_DEV_SM_CLOCK\n1700000000,0.5,1980\n1700000001,0.6,1980\n")
    w.write_ground_truth({"fault_id": fault, "fault_class": "NCCL", "component": "rank-1", "node": "node-1",
                          "rank": 1, "start": 1700000040.0, "end": 1700000065.0, "mechanism": "SIGSTOP",
                          "realism": "real", "verified": True})
    w.write_text("scenario.resolved.yaml", f"faults: [{fault}]\n")
    return w


def test_partial_case_is_not_a_case_until_finalized(tmp_path):
    w = make_case(tmp_path)
    assert w.path.name == "c1.partial"
    assert list(find_cases(tmp_path)) == []
    with pytest.raises(CaseInvalid, match="incomplete case"):
        CaseView(w.path)
    final = w.finalize({"seed": 1}, "completed")
    assert list(find_cases(tmp_path)) == [final] and not w.path.exists()
    assert json.loads((final / "manifest.json").read_text())["status"] == "completed"


def test_view_gives_everything_but_the_answer(tmp_path):
    case = CaseView(make_case(tmp_path).finalize({}, "completed"))
    assert case.inject_time == 1700000040.0
    assert list(case.metrics().columns) == ["time", "ingress_latency", "rank-1_DCGM_FI_DEV_SM_CLOCK"]
    assert case.topology.rank_node["rank-1"] == "node-1"
    assert [e["stage"] for e in case.events()] == ["deploy"]  # fault.* stages are hidden
    public = [a for a in dir(case) if not a.startswith("_")]
    assert not any("truth" in a or "scenario" in a or "fault" in a for a in public)
    assert read_ground_truth(case.path)["component"] == "rank-1"


def test_crash_mid_write_leaves_no_complete_case(tmp_path):
    code = (
        "import os, sys; sys.path.insert(0, %r)\n"
        "from chaosbench.case import CaseWriter\n"
        "w = CaseWriter(__import__('pathlib').Path(%r))\n"
        "w.event('deploy', 'start'); w.write_text('data.csv', 'time\\n1\\n')\n"
        "os._exit(9)\n"
    ) % (str(__import__("pathlib").Path(__file__).resolve().parents[1]), str(tmp_path / "crashed"))
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert list(find_cases(tmp_path)) == []
    assert (tmp_path / "crashed.partial" / "events.jsonl").read_text().count("deploy") == 1


def test_atomic_write_never_leaves_temp_files(tmp_path, monkeypatch):
    atomic_write_json(tmp_path / "x.json", {"a": 1})

    def crash(*_):
        raise OSError("disk gone")

    monkeypatch.setattr("chaosbench.case.os.replace", crash)
    with pytest.raises(OSError):
        atomic_write_json(tmp_path / "x.json", {"a": 2})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_missing_or_bad_files_are_case_errors(tmp_path):
    w = CaseWriter(tmp_path / "c")
    w.write_text("inject_time.txt", "soon\n")
    case = CaseView(w.finalize({}, "completed"))
    with pytest.raises(CaseInvalid, match="data.csv: missing"):
        case.metrics()
    with pytest.raises(CaseInvalid, match="not a number"):
        _ = case.inject_time
    with pytest.raises(CaseInvalid, match="already exists"):
        CaseWriter(tmp_path / "c")


def test_view_is_blind_over_an_older_full_manifest(tmp_path):
    w = make_case(tmp_path, "nccl-hang-r1")
    case = CaseView(w.finalize({"scenario": "nccl-hang-r1", "run_id": "r", "backend": "local", "engine": "mini",
                                "machine": {"argv": ["run", "nccl-hang.yaml"], "cpus": 2}}, "completed"))
    man = json.dumps({k: v for k, v in case.manifest.items() if k != "case_id"})  # the id is the directory name
    assert "nccl" not in man and "run_id" not in man and "status" not in man and case.manifest["backend"] == "local"
    assert not hasattr(case, "name") and case.case_id == "nccl-hang-r1"  # the evaluation hands over an opaque copy
    assert all(not e["stage"].startswith("fault") for e in case.events())
