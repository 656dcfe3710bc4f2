"""The main job's glue: a suite's methods, and eval + report over its cases."""

from __future__ import annotations

from harness.benchmark import evaluate_and_report, suite_methods
from harness.eval.synthetic import make_dataset
from harness.scenario import load_suite


def test_smoke_suite_methods_come_from_its_scenarios(repo):
    path = repo / "scenarios" / "suites" / "smoke.yaml"
    methods = suite_methods(load_suite(path), path)
    assert methods[:2] == ["outpost", "analyzer"] and "baro" in methods and "random" in methods


def test_eval_and_report_over_a_cases_dir(tmp_path):
    make_dataset(tmp_path / "run", 4, seed=3)  # a run: cases/ + labels.jsonl
    eval_dir, report = evaluate_and_report(tmp_path / "run", ["baro", "random"], workers=1)
    assert eval_dir == tmp_path / "run" / "eval"
    assert (eval_dir / "scores.json").is_file() and (eval_dir / "leaderboard.md").is_file()
    text = report.read_text()
    assert report.name == "report.html" and "baro" in text and "random" in text
