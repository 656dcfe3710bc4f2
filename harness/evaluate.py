"""Evaluate RCA methods on a directory of cases: run cases x methods, score, write the results.

``evaluate(dataset_dir, out_dir, methods, workers, ...) -> out_dir`` writes into ``out_dir``:
scores.json (documented in harness.report.scores), leaderboard.md and leaderboard.csv. Each method's answer for
each case is written to ``<case>/detectors/<method>.json`` as it completes, so an interrupted evaluation resumes
with the same command (what exists is skipped; ``force=True`` recomputes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.eval.discover import CaseRef, discover, ground_truth, open_view
from harness.eval.fanout import OnDone, Task, preload, read_result, run_inline, run_local, run_ray
from harness.eval.methods import Method, select
from harness.score.aggregate import CaseOutcome, score_methods

DEFAULT_TIMEOUT_S = 300.0


def plan(refs: Sequence[CaseRef], methods: Sequence[Method]) -> list[Task]:
    """Tasks for every evaluable case (valid and completed) and every available method."""
    return [Task(ref, m) for ref in refs if ref.status == "completed" for m in methods]


def _outcomes(refs: Sequence[CaseRef], methods: Sequence[Method]) -> list[CaseOutcome]:
    """Outcomes of the evaluable cases; invalid and unverified cases are listed in scores.json, not here."""
    from baselines.inputs import case_components, metric_columns
    from harness.eval.collect import outcome

    out: list[CaseOutcome] = []
    for ref in refs:
        if ref.status != "completed":
            continue
        view, truth = open_view(ref), ground_truth(ref)
        comps, cols, rank_node = case_components(view), metric_columns(view), dict(view.topology.rank_node)
        for m in methods:
            result = read_result(Task(ref, m))
            if result is not None:  # None: not run yet (interrupted); the next call runs it
                out.append(outcome(ref.id, True, truth, result, comps, cols, rank_node, m.ranks_metrics))
    return out


def _explanations(refs: Sequence[CaseRef], methods: Sequence[Method]) -> dict[str, object]:
    """The Analyzer's own scores (valid-format rate, fault-class accuracy, ROUGE-L vs reference chains), per fault."""
    if not any(m.name == "analyzer" for m in methods):
        return {}
    try:
        from detectors.analyzer.metrics import score_case, summarize
    except Exception as exc:  # noqa: BLE001 - the analyzer package is optional here
        return {"analyzer": {"error": f"cannot import detectors.analyzer.metrics: {exc}"}}
    analyzer = next(m for m in methods if m.name == "analyzer")
    scores = []
    for ref in refs:
        result = read_result(Task(ref, analyzer)) if ref.status == "completed" else None
        if result is not None:
            scores.append(score_case(ref.id, result, ground_truth(ref)))
    return {"analyzer": summarize(scores)} if scores else {}


def evaluate(
    dataset_dir: Path,
    out_dir: Path | None = None,
    methods: list[str] | None = None,
    workers: int = 2,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ray_address: str | None = None,
    force: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_done: OnDone | None = None,
) -> Path:
    """Run, score and write the leaderboard; returns ``out_dir``.

    ``methods``: names, groups (fast, all, slow, trivial, kat, rcaeval) or ``module:function`` plugins; default
    ``fast``. ``workers=0`` runs in this process without timeouts (debugging). ``on_start(total, todo)`` and
    ``on_done(task, status)`` drive progress displays.
    """
    from harness.report.scores import write_results

    dataset_dir = Path(dataset_dir)
    out_dir = Path(out_dir) if out_dir else Path("results") / "eval" / dataset_dir.resolve().name
    refs = discover(dataset_dir)
    chosen = select(methods)
    availability = {m.name: m.status() for m in chosen}
    runnable = [m for m in chosen if availability[m.name][0]]
    tasks = plan(refs, runnable)
    todo = [t for t in tasks if force or read_result(t) is None]
    if on_start:
        on_start(len(tasks), len(todo))
    t0 = time.perf_counter()
    if todo:
        if ray_address:
            run_ray(todo, ray_address, workers, timeout_s, on_done)
        elif workers <= 0:
            run_inline(todo, on_done)
        else:
            preload(runnable)
            run_local(todo, workers, timeout_s, on_done)
    wall = time.perf_counter() - t0
    outcomes = _outcomes(refs, runnable)
    scores = score_methods(outcomes)
    write_results(out_dir, dataset_dir=dataset_dir, refs=refs, methods=chosen, availability=availability,
                  outcomes=outcomes, scores=scores, explanations=_explanations(refs, runnable),
                  run={"tasks": len(tasks), "computed": len(todo), "reused": len(tasks) - len(todo),
                       "workers": workers, "ray": ray_address, "timeout_s": timeout_s, "wall_s": round(wall, 3)})
    return out_dir
