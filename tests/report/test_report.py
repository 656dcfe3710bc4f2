"""report.html and annotated Chrome traces from a small evaluated dataset; the eval/report/methods commands."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import pytest

from chaosbench.cli import main
from chaosbench.detectors.api import AnomalousEvent
from chaosbench.eval.synthetic import make_case
from chaosbench.evaluate import evaluate
from chaosbench.report import write_report
from chaosbench.report.chrome import ANOMALY_TID, annotate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # eval_fixtures
KINETO = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces" / "kineto-recsys-2rank"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds")
    case = make_case(root, "c0", "cpu-contention", "node-1", seed=1)
    make_case(root, "clean", None, None, seed=2)
    (case / "traces" / "rank-0.json").write_text(json.dumps({"traceEvents": [
        {"name": "aten::mm", "ph": "X", "ts": 10, "dur": 5, "pid": 1, "tid": 1}]}))
    return evaluate(root, tmp_path_factory.mktemp("out"), ["random", "baro", "flags=eval_fixtures:flags_everything"],
                    workers=1)


def test_report_is_self_contained(results):
    page = write_report(results).read_text()
    assert page.startswith("<!doctype html>")
    for text in ("Leaderboard", "Per fault type", "cpu-contention", "c0", "clean", 'class="emulated"',
                 "rank-0 slow -&gt; allreduce waits", "aten::mm"):
        assert text in page, text
    assert page.count("data:image/png;base64,") == 2  # one timeline per case
    assert "src=\"http" not in page and "<script src" not in page
    assert "traces/c0.annotated.json.gz" in page


def test_annotated_trace_marks_the_anomaly(results):
    write_report(results)
    doc = json.loads(gzip.decompress((results / "traces" / "c0.annotated.json.gz").read_bytes()))
    marks = [e for e in doc["traceEvents"] if e.get("tid") == ANOMALY_TID]
    assert len(marks) == 1 and marks[0]["name"] == "ANOMALY aten::mm" and marks[0]["ph"] == "X"
    assert any(e.get("name") == "aten::mm" and e.get("tid") == 1 for e in doc["traceEvents"])


def test_annotate_real_kineto_traces(tmp_path):
    if not KINETO.is_dir():
        pytest.skip("shared reference traces not present")
    ev = AnomalousEvent("rank-1", "1", "1", "slow op", ts=1.0, dur=2.0, expected_dur=1.0, score=3.0)
    out = annotate(sorted(KINETO.glob("*.json.gz")), [("outpost", ev)], tmp_path / "t.json.gz")
    events = json.loads(gzip.decompress(out.read_bytes()))["traceEvents"]
    assert len(events) > 1000 and events[-1]["name"] == "ANOMALY slow op"


def test_cli_eval_report_methods(tmp_path, capsys):
    make_case(tmp_path / "ds", "c0", "host-memory-pressure", "node-0", seed=5)
    assert main(["eval", str(tmp_path / "ds"), "--out", str(tmp_path / "out"), "-m", "baro", "--no-report"]) == 0
    assert (tmp_path / "out" / "leaderboard.md").is_file() and not (tmp_path / "out" / "report.html").exists()
    assert main(["report", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.html").is_file()
    assert main(["methods", "--no-check"]) == 0
    assert "microrank" in capsys.readouterr().out


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a directory" in err and "scores.json: missing" in err and "Traceback" not in err
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_run_report_has_intervals_comparisons_unscored_cases_and_the_detectability_curve(tmp_path, capsys):
    from chaosbench.eval.synthetic import dataset_specs, make_run

    specs = dataset_specs(8, clean_every=4, seed=30)
    for i, spec in enumerate(specs):
        spec.update(intensity=(i % 4) / 4 + 0.1, split="dev" if i % 2 else "test")
    specs.append({"fault_id": "cpu-contention", "target": "node-0", "seed": 50, "status": "not-verified",
                  "reason": "verify: no cpu pressure seen", "split": "dev"})
    run = make_run(tmp_path / "run", specs)
    assert main(["export", str(run), "--out", str(tmp_path / "run.tar.gz")]) == 0
    assert main(["eval", str(tmp_path / "run.tar.gz"), "--out", str(tmp_path / "out"), "-m", "baro",
                 "--workers", "1"]) == 0
    page = (tmp_path / "out" / "report.html").read_text()
    for text in ("Paired comparisons", "vs-baseline", "Cases not scored", "verify: no cpu pressure seen",
                 "Detectability", 'alt="detectability"', "0.00-0.25", "bootstrap interval", "target kind"):
        assert text in page, text
    assert page.count("data:image/png;base64,") == 1 + 9  # the curve + a timeline per case (unscored too)
    assert " [" in page.split("<h2>Leaderboard</h2>")[1].split("</table>")[0]  # intervals in the leaderboard
    assert main(["eval", str(run), "--out", str(tmp_path / "dev"), "-m", "constant", "--split", "dev",
                 "--no-report"]) == 0
    doc = json.loads((tmp_path / "dev" / "scores.json").read_text())
    assert {c["split"] for c in doc["cases"]} == {"dev"}
    assert main(["eval", str(run), "--split", "train"]) == 2
    assert "--split must be one of dev, test, all" in capsys.readouterr().err
