"""The main job's last two stages: after ``chaosbench run SUITE`` wrote its cases, evaluate the suite's
methods on them and write the report. Each stage is its own module (evaluate, report); this one only chains them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.scenario import Suite, expand_suite


def suite_methods(suite: Suite, suite_path: Path) -> list[str]:
    """The detectors named by the suite's scenarios (``spec.evaluation.detectors``) and the suite itself, in order."""
    names: dict[str, None] = {}
    for scenario, _, _ in expand_suite(suite, suite_path):
        names.update(dict.fromkeys(scenario.spec.evaluation.detectors))
    names.update(dict.fromkeys(suite.spec.detectors))
    return list(names)


def evaluate_and_report(
    run_root: Path,
    methods: list[str] | None,
    workers: int = 2,
    on_start: Callable[[int, int], None] | None = None,
    on_done: Callable | None = None,
) -> tuple[Path, Path]:
    from harness.evaluate import evaluate
    from harness.report import write_report

    eval_dir = evaluate(run_root, run_root / "eval", methods, workers, on_start=on_start, on_done=on_done)
    return eval_dir, write_report(eval_dir)
