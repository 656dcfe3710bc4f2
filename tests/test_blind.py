"""Blind by construction: the answer planted in every non-blind place (case directory names, the full manifest,
the full journal, files and directories beside the cases, labels/, ground truth, plan.json) is out of a detector's
reach, and no built-in detector's output changes."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import pytest

from chaosbench.case import CaseView
from chaosbench.eval.blind import blind_cases
from chaosbench.eval.discover import discover
from chaosbench.eval.synthetic import make_case, make_run
from chaosbench.evaluate import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))  # eval_fixtures
from eval_fixtures import MARKER  # noqa: E402

TOOLS = Path(__file__).resolve().parents[2] / "shared" / "tools"
BUILTIN = ["outpost", "analyzer", "random", "constant", "baro"]
SPECS = [{"fault_id": "cpu-contention", "target": "node-1", "seed": 1},
         {"fault_id": "gpu-clock-lock", "target": "rank-2", "seed": 2},
         {"fault_id": "host-memory-pressure", "target": "node-0", "seed": 3},
         {"fault_id": None, "target": None, "seed": 4}]


def _traces(case: Path, seed: int, slow_rank: int | None) -> None:
    """Outpost input: synthetic per-rank traces moved onto the case's clock (slowed rank after the injection)."""
    from chaosbench.detectors.outpost.synth import Slowdown, SynthSpec, generate, step_windows, truth_for

    spec = SynthSpec(ranks=4, steps=30, seed=seed, inject_step=15,
                     slowdowns=(Slowdown((slow_rank,), 3.0, 15, 29),) if slow_rank is not None else ())
    shift = float((case / "inject_time.txt").read_text()) * 1e6 - truth_for(spec, step_windows(spec))["inject_time"] * 1e6
    for rank, events in generate(spec).items():
        for e in events:
            if "ts" in e:
                e["ts"] += shift
        (case / "traces" / f"rank-{rank}.json.gz").write_bytes(gzip.compress(json.dumps({"traceEvents": events}).encode()))


def _plant(run: Path) -> None:
    """Write the answer into every place that is not blind."""
    labels = [json.loads(line) for line in (run / "labels.jsonl").read_text().splitlines()]
    answers = {r["case_id"]: f"{MARKER} {r['ground_truth']['fault_id']} {r['ground_truth']['component']}"
               for r in labels}
    (run / "plan.json").write_text(json.dumps([{"case_id": c, "target": a} for c, a in answers.items()]))
    for cid, answer in answers.items():
        case, truth = run / "cases" / cid, next(r["ground_truth"] for r in labels if r["case_id"] == cid)
        manifest = json.loads((case / "manifest.json").read_text())
        manifest.update(scenario=answer, run_id=answer, argv=["chaosbench", "run", answer], status="completed",
                        machine={"argv": [answer], "hostname": answer, "cpus": 2})
        (case / "manifest.json").write_text(json.dumps(manifest))
        (case / "ground_truth.json").write_text(json.dumps({**truth, "note": answer}))
        (case / "scenario.resolved.yaml").write_text(f"faults: [{answer}]\n")
        (case / "plan.json").write_text(json.dumps({"case_id": cid, "target": truth["component"], "note": answer}))
        with (case / "events.jsonl").open("a") as fh:
            fh.write(json.dumps({"t": 1.0, "stage": "fault.inject", "event": "point", "detail": answer}) + "\n")
            fh.write(json.dumps({"t": 2.0, "stage": "deploy", "event": "start", "detail": answer}) + "\n")
        named = case / f"{MARKER}-{truth['fault_id']}-{truth['component']}"  # a directory named after the answer
        named.mkdir()
        (named / "ground_truth.json").write_text(json.dumps(truth))
        (case / "load" / ".answer.json").write_text(json.dumps({"note": answer}))  # hidden file in a blind dir
        (run / "labels" / cid / "note.txt").write_text(answer)
        (run / f"{MARKER}-{cid}").mkdir()  # a sibling directory of cases/
        (run / f"{MARKER}-{cid}" / "ground_truth.json").write_text(json.dumps({**truth, "case_id": cid}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    clean = make_run(tmp_path_factory.mktemp("clean"), SPECS)
    for rec in map(json.loads, (clean / "labels.jsonl").read_text().splitlines()):
        comp = rec["ground_truth"]["component"] or ""
        _traces(clean / "cases" / rec["case_id"], rec["index"], int(comp[5:]) if comp.startswith("rank-") else None)
    planted = tmp_path_factory.mktemp("planted") / "run"
    shutil.copytree(clean, planted)
    _plant(planted)
    return clean, planted


def _answers(out: Path, method: str) -> dict[str, dict]:
    keep = ("status", "error", "ranking", "anomalous", "events", "explanation", "detected_at")
    return {f.stem: {k: json.loads(f.read_text())[k] for k in keep} for f in (out / "detectors" / method).glob("*.json")}


def test_no_builtin_detector_output_changes(runs, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))  # blind copies well away from the runs
    (tmp_path / "tmp").mkdir()
    clean, planted = runs
    methods = [*BUILTIN, "eval_fixtures:snoop"]
    leak = (TOOLS / "leak_plugin.py").is_file()
    if leak:
        monkeypatch.syspath_prepend(str(TOOLS))
        methods.append("leak_plugin:leak")
    a = evaluate(clean, tmp_path / "a", methods, workers=2, timeout_s=300)
    b = evaluate(planted, tmp_path / "b", methods, workers=2, timeout_s=300)
    for method in BUILTIN:
        before, after = _answers(a, method), _answers(b, method)
        assert len(before) == len(SPECS) and before == after, method
    assert _answers(a, "outpost")  # outpost really ran (traces present), it did not just fail both times
    assert all(r["status"] == "ok" for r in _answers(a, "outpost").values())
    for f in (b / "detectors" / "eval_fixtures:snoop").glob("*.json"):
        assert json.loads(f.read_text())["extra"]["seen"] == [], f.name
    if leak:
        assert all(r["ranking"] == [] for r in _answers(b, "leak_plugin:leak").values())
    assert not list((tmp_path / "tmp").iterdir())  # blind copies removed


def test_caseview_reaches_blind_files_only(runs, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    _, planted = runs
    refs = discover(planted)
    with blind_cases(refs) as copies:
        for ref in refs:
            view = CaseView(copies[ref.case_id])
            assert MARKER not in json.dumps(view.manifest) and MARKER not in json.dumps(view.events())
            assert {p.name for p in view.path.iterdir()} <= {"manifest.json", "topology.json", "inject_time.txt",
                                                             "events.jsonl", "data.csv", "logs.csv", "traces", "load"}
            for f in view.path.rglob("*"):
                assert not f.is_file() or MARKER.encode() not in f.read_bytes(), f
            public = {a for a in dir(view) if not a.startswith("_")}
            assert "name" not in public and not any("truth" in a or "scenario" in a or "label" in a for a in public)
            assert view.case_id == ref.case_id
        root = next(iter(copies.values())).parents[2]
        assert root.name.startswith("chaosbench-blind-")
        assert sorted(p.name for p in (root / "run" / "cases").iterdir()) == sorted(copies)
    assert not root.exists()


def test_older_case_names_do_not_reach_the_detector(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    make_case(tmp_path / "ds", "cpu-contention-node-1", "cpu-contention", "node-1", seed=1)
    (ref,) = discover(tmp_path / "ds")
    assert "cpu" not in ref.case_id and len(ref.case_id) == 12
    with blind_cases([ref]) as copies:
        copy = copies[ref.case_id]
        assert "cpu" not in str(copy) and not (copy / "ground_truth.json").exists()
