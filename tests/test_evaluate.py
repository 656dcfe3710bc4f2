"""evaluate(): discovery in every layout (run, older case directories, RCAEval, exported archive), splits, failures
and timeouts recorded, invalid and unscored cases reported with reasons, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaosbench.errors import InputInvalid, PluginInvalid
from chaosbench.eval.discover import discover, opaque_id
from chaosbench.eval.export import export_run
from chaosbench.eval.methods import select
from chaosbench.eval.synthetic import dataset_specs, make_case, make_run
from chaosbench.evaluate import evaluate

METHODS = ["random", "constant", "baro", "boom=eval_fixtures:raising", "flags=eval_fixtures:flags_everything"]
TIMEOUT_S = 300  # generous: the CI machine may be loaded; the hung method has its own short-limit test


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds")
    make_case(root, "c0", "cpu-contention", "node-1", seed=1)
    make_case(root, "c1", "host-memory-pressure", "node-0", seed=2)
    make_case(root, "c2", "gpu-memory-pressure", "rank-2", seed=3)
    make_case(root, "clean", None, None, seed=4)
    make_case(root, "unverified", "cpu-contention", "node-0", seed=5, status="not-verified")
    (make_case(root, "nodata", "cpu-contention", "node-0", seed=6) / "data.csv").unlink()
    (make_case(root, "late", "cpu-contention", "node-0", seed=7) / "inject_time.txt").write_text("42\n")
    return root


@pytest.fixture(scope="module")
def evaluated(dataset, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out")
    evaluate(dataset, out, METHODS, workers=2, timeout_s=TIMEOUT_S)
    return out, json.loads((out / "scores.json").read_text())


def _method(doc: dict, name: str) -> dict:
    return next(m for m in doc["methods"] if m["name"] == name)


def test_scores_and_failures(evaluated):
    out, doc = evaluated
    assert {p.name for p in out.iterdir()} >= {"scores.json", "leaderboard.md", "leaderboard.csv"}
    baro = _method(doc, "baro")["scores"]
    assert baro["component"]["n"] == 3 and baro["component"]["ac"]["1"] == 1.0
    assert baro["component"]["chance_ac"]["1"] == pytest.approx(1 / 7)
    boom = _method(doc, "boom")["scores"]
    assert boom["n_failed"] == 4 and boom["component"]["ac"]["5"] == 0.0
    assert any("fixture detector exploded" in e for e in boom["errors"])
    flags = _method(doc, "flags")["scores"]
    assert flags["case_detection"]["fpr"] == 1.0 and flags["case_detection"]["recall"] == 1.0
    # its one event is on rank-0 inside the window: a hit only for the node-0 fault (rank-0 lives on node-0)
    assert flags["event_detection"]["recall"] == pytest.approx(1 / 3)
    assert flags["event_detection"]["precision"] == pytest.approx(1 / 4)
    per = flags["per_fault_detection"]  # the same, per fault type, over that type's cases only
    assert sum(p["event"]["tp"] for p in per.values()) == 1 and all(p["event"]["n_clean"] == 0 for p in per.values())
    assert "| flags | " in (out / "leaderboard.md").read_text().split("Event-level detection per fault type")[1]


def test_invalid_and_unverified_cases_are_reported(evaluated):
    _, doc = evaluated
    cases = {c["id"]: c for c in doc["cases"]}
    assert cases["nodata"]["status"] == "invalid" and "data.csv missing" in cases["nodata"]["problem"]
    assert "outside the data" in cases["late"]["problem"]
    assert cases["unverified"]["status"] == "not-verified"
    scored = {o["case"] for o in doc["outcomes"] if o["scored"]}
    assert scored == {"c0", "c1", "c2", "clean"}


def test_rerun_resumes(dataset, evaluated, tmp_path):
    out, _ = evaluated
    assert not (dataset / "c0" / "detectors").exists()  # answers never go into a case
    (out / "detectors" / "baro" / f"{opaque_id('c0')}.json").unlink()
    evaluate(dataset, out, METHODS, workers=2, timeout_s=TIMEOUT_S)
    run = json.loads((out / "scores.json").read_text())["run"]
    assert run["computed"] == 1 and run["reused"] == run["tasks"] - 1


def test_hung_method_is_killed_and_the_rest_goes_on(tmp_path):
    make_case(tmp_path / "ds", "c0", "cpu-contention", "node-1", seed=1)
    out = evaluate(tmp_path / "ds", tmp_path / "out", ["constant", "stuck=eval_fixtures:hanging"], workers=2,
                   timeout_s=3)
    doc = json.loads((out / "scores.json").read_text())
    assert list(_method(doc, "stuck")["scores"]["errors"]) == ["timeout: timed out after 3 s (killed)"]
    assert _method(doc, "constant")["scores"]["n_failed"] == 0
    result = json.loads((out / "detectors" / "stuck" / f"{opaque_id('c0')}.json").read_text())
    assert result["status"] == "timeout"


def test_leaderboard_lists_every_method(evaluated):
    out, doc = evaluated
    md = (out / "leaderboard.md").read_text()
    for m in doc["methods"]:
        assert f"| {m['name']} |" in md
    assert "cpu-contention AC@1" in (out / "leaderboard.csv").read_text().splitlines()[0]


def test_rcaeval_layout(tmp_path):
    import shutil

    src = make_case(tmp_path / "src", "x", "cpu-contention", "node-1", seed=9)
    run = tmp_path / "ds" / "node-1_cpu" / "1"
    run.mkdir(parents=True)
    shutil.copy(src / "data.csv", run / "data.csv")
    shutil.copy(src / "inject_time.txt", run / "inject_time.txt")
    (refs,) = discover(tmp_path / "ds")
    assert refs.layout == "rcaeval" and refs.status == "completed"
    out = evaluate(tmp_path / "ds", tmp_path / "out", ["baro"], workers=1)
    doc = json.loads((out / "scores.json").read_text())
    assert doc["cases"][0]["component"] == "node-1" and doc["cases"][0]["fault_id"] == "cpu"
    baro = _method(doc, "baro")["scores"]
    assert baro["component"]["ac"]["1"] == 1.0 and baro["metric"]["ac"]["1"] == 1.0


def test_bad_inputs(tmp_path):
    with pytest.raises(InputInvalid, match="no cases"):
        evaluate(tmp_path, tmp_path / "out")
    with pytest.raises(InputInvalid, match="not a directory"):
        discover(tmp_path / "missing")
    with pytest.raises(InputInvalid, match="did you mean 'baro'"):
        select(["bar0"])
    with pytest.raises(PluginInvalid, match="eval_fixtures:two_args"):
        select(["eval_fixtures:two_args"])
    with pytest.raises(PluginInvalid, match="nosuchmodule"):
        select(["nosuchmodule:detect"])


@pytest.mark.slow
def test_ray_fanout_cancels_a_hung_method(tmp_path, monkeypatch):
    """A local Ray instance runs the tasks; the hung one is cancelled at the limit, the other is scored."""
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent))  # eval_fixtures, in Ray's workers
    make_case(tmp_path / "ds", "c0", "cpu-contention", "node-1", seed=1)
    out = evaluate(tmp_path / "ds", tmp_path / "out", ["constant", "stuck=eval_fixtures:hanging"], workers=2,
                   ray_address="local", timeout_s=20)
    doc = json.loads((out / "scores.json").read_text())
    assert doc["run"]["ray"] == "local"
    assert list(_method(doc, "stuck")["scores"]["errors"]) == ["timeout: timed out after 20 s (cancelled)"]
    assert _method(doc, "constant")["scores"]["n_failed"] == 0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    specs = dataset_specs(8, clean_every=4, seed=20)
    for i, spec in enumerate(specs):
        spec["split"] = "dev" if i < 4 else "test"
        spec["intensity"] = (i % 4) / 4 + 0.1
    specs += [{"fault_id": "cpu-contention", "target": "node-0", "seed": 40, "status": "failed",
               "reason": "inject: stress-ng not found", "split": "test"},
              {"fault_id": "cpu-contention", "target": "node-1", "seed": 41, "status": "aborted",
               "reason": "stop condition: ingress down", "split": "dev"}]
    return make_run(tmp_path_factory.mktemp("run"), specs)


def test_run_layout_labels_splits_and_unscored_cases(run_dir, tmp_path):
    out = evaluate(run_dir, tmp_path / "all", ["random", "constant", "baro"], workers=2, timeout_s=TIMEOUT_S)
    doc = json.loads((out / "scores.json").read_text())
    assert sorted(p.name for p in (out / "detectors").iterdir()) == ["baro", "constant", "random"]
    assert not any((run_dir / "cases").glob("*/detectors"))
    baro = _method(doc, "baro")["scores"]
    assert baro["component"]["n"] == 6  # the failed and aborted cases are not scored
    assert doc["not_scored"] == {"failed": {"inject: stress-ng not found": 1},
                                 "aborted": {"stop condition: ingress down": 1}}
    md = (out / "leaderboard.md").read_text()
    assert "failed (1): inject: stress-ng not found (1)" in md and "aborted (1)" in md
    assert doc["counts"]["by_split"] == {"dev": 5, "test": 5}
    assert doc["counts"]["by_target_kind"]["node"] >= 2
    (lo, hi), ac1 = baro["component"]["ac_ci"]["1"], baro["component"]["ac"]["1"]
    assert lo <= ac1 <= hi and f"| {ac1:.2f} [{lo:.2f}, {hi:.2f}] |" in md
    assert {c["kind"] for c in doc["comparisons"]} == {"vs-baseline", "top-two"}
    assert set(baro["per_intensity"]) <= {"0.00-0.25", "0.25-0.50", "0.50-0.75", "0.75-1.00"}
    dev = evaluate(run_dir, tmp_path / "dev", ["constant"], workers=1, split="dev")
    dev_doc = json.loads((dev / "scores.json").read_text())
    assert {c["split"] for c in dev_doc["cases"]} == {"dev"} and len(dev_doc["cases"]) == 5
    assert dev_doc["run"]["split"] == "dev"


def test_leaderboard_csv_keeps_ac1_with_its_interval(run_dir, tmp_path):
    import csv

    out = evaluate(run_dir, tmp_path / "o", ["constant", "baro"], workers=1)
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    first = next(k for k in rows[0] if "ac@1" in k.lower())
    assert first == "AC@1" and {"AC@1 low", "AC@1 high", "Avg@5 low", "FPR high"} <= set(rows[0])
    baro = next(r for r in rows if r["method"] == "baro")
    assert float(baro["AC@1 low"]) <= float(baro["AC@1"]) <= float(baro["AC@1 high"])


def test_export_and_eval_the_archive(run_dir, tmp_path):
    import tarfile

    (run_dir / "dataset_card.md").write_text("# card\n")
    archive, n = export_run(run_dir, tmp_path / "bench.tar.gz")
    assert n == 10  # every listed case with a directory, the failed and aborted ones too
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    top = run_dir.name
    assert f"{top}/labels.jsonl" in names and f"{top}/dataset_card.md" in names
    assert not any(n.startswith(f"{top}/cases/") and n.endswith(("ground_truth.json", "scenario.resolved.yaml"))
                   for n in names)
    a = json.loads((evaluate(archive, tmp_path / "a", ["constant", "baro"], workers=1) / "scores.json").read_text())
    d = json.loads((evaluate(run_dir, tmp_path / "d", ["constant", "baro"], workers=1) / "scores.json").read_text())
    assert _method(a, "baro")["scores"]["component"] == _method(d, "baro")["scores"]["component"]
    with pytest.raises(InputInvalid, match="not a run directory"):
        export_run(tmp_path, tmp_path / "x.tar.gz")


def test_plugins_are_named_module_function():
    names = [m.name for m in select(["eval_fixtures:flags_everything", "x=eval_fixtures:raising"])]
    assert names[:2] == ["eval_fixtures:flags_everything", "x"]


def test_the_methods_a_run_evaluates_come_from_its_document(repo):
    from chaosbench.campaign import load_any
    from chaosbench.evaluate import methods_of
    from chaosbench.scenario import load_scenario, load_suite

    path = repo / "scenarios" / "suites" / "smoke.yaml"
    methods = methods_of(load_suite(path), path)
    assert methods[:2] == ["outpost", "analyzer"] and "baro" in methods and "random" in methods
    assert len(methods) == len(set(methods))
    scenario = repo / "scenarios" / "clean.yaml"
    assert methods_of(load_scenario(scenario), scenario) == list(load_scenario(scenario).spec.evaluation.detectors)
    campaign = repo / "scenarios" / "campaigns" / "benchmark.yaml"
    assert methods_of(load_any(campaign), campaign) is None  # a campaign: the default method set


def test_eval_with_the_report_over_a_run(tmp_path):
    from chaosbench.eval.synthetic import make_dataset

    make_dataset(tmp_path / "run", 4, seed=3)  # a run: cases/ + labels.jsonl
    eval_dir = evaluate(tmp_path / "run", tmp_path / "run" / "eval", ["baro", "random"], workers=1, report=True)
    assert eval_dir == tmp_path / "run" / "eval"
    assert (eval_dir / "scores.json").is_file() and (eval_dir / "leaderboard.md").is_file()
    text = (eval_dir / "report.html").read_text()
    assert "baro" in text and "random" in text
