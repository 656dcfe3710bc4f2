"""The main job: run a suite's cases, evaluate every method on them, write the report.

``chaosbench run SUITE`` calls ``run_benchmark``; each stage is its own module
(runner, evaluate, report) and this one only chains them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ChaosbenchError
from harness.scenario import Suite, expand_suite


@dataclass(frozen=True)
class BenchmarkResult:
    cases: list[Path]
    eval_dir: Path
    report: Path


def suite_methods(suite: Suite, suite_path: Path) -> list[str]:
    """The detectors named by the suite's scenarios (``spec.evaluation.detectors``) and the suite itself, in order."""
    names: dict[str, None] = {}
    for scenario, _, _ in expand_suite(suite, suite_path):
        names.update(dict.fromkeys(scenario.spec.evaluation.detectors))
    names.update(dict.fromkeys(suite.spec.detectors))
    return list(names)


def evaluate_and_report(
    cases_root: Path,
    methods: list[str] | None,
    workers: int = 2,
    on_start: Callable[[int, int], None] | None = None,
    on_done: Callable | None = None,
) -> tuple[Path, Path]:
    from harness.evaluate import evaluate
    from harness.report import write_report

    eval_dir = evaluate(cases_root, cases_root.parent / "eval", methods, workers, on_start=on_start, on_done=on_done)
    return eval_dir, write_report(eval_dir)


def run_benchmark(suite: Suite, suite_path: Path, out_root: Path, *, workers: int = 2,
                  progress=None, on_case=None, on_start=None, on_done=None) -> BenchmarkResult:
    from harness.runner import run_suite

    cases = run_suite(suite, out_root, suite_path=suite_path, progress=progress, on_case=on_case)
    if not cases:
        raise ChaosbenchError("the suite produced no case")
    cases_root = cases[0].parent
    eval_dir, report = evaluate_and_report(cases_root, suite_methods(suite, suite_path), workers, on_start, on_done)
    return BenchmarkResult(cases, eval_dir, report)
