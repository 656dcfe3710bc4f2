"""Evaluate RCA methods on a dataset: run cases x methods against blind copies, score, write the results.

The public face of the evaluation stage; its internals are in harness/eval/ (discovery, blind copies, the method
catalogue, the fan-out, outcomes, export). ``methods_of`` says which methods ``chaosbench run`` evaluates.

``evaluate(dataset, out_dir, methods, workers, ...) -> out_dir``. ``dataset`` is a run directory (cases/ +
labels.jsonl), an archive of one written by ``chaosbench export`` (read directly), or a directory of older case
directories or RCAEval cases (chaosbench.eval.discover). Detectors read only blind copies of the cases
(chaosbench.eval.blind); each answer goes to ``<out>/detectors/<method>/<case_id>.json`` as it completes, so an
interrupted evaluation resumes with the same command (what exists is skipped; ``force=True`` recomputes). Nothing
that carries a label is written to ``<out>`` before every detection task has finished; then scores.json
(documented in chaosbench.report.scores), leaderboard.md and leaderboard.csv.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaosbench.eval.blind import blind_cases
from chaosbench.eval.discover import CaseRef, discover, ground_truth, is_run_dir, open_view
from chaosbench.eval.fanout import OnDone, Task, preload, read_result, run_inline, run_local, run_ray
from chaosbench.eval.methods import Method, select
from chaosbench.score.aggregate import CaseOutcome, score_methods

if TYPE_CHECKING:
    from chaosbench.campaign import Campaign
    from chaosbench.scenario import Scenario, Suite

DEFAULT_TIMEOUT_S = 300.0


def methods_of(doc: Scenario | Suite | Campaign, path: Path) -> list[str] | None:
    """The methods a run's document names, in order: a scenario's ``spec.evaluation.detectors``; a suite's, those
    of its scenarios then its own ``spec.detectors``; None for a campaign (the default method set)."""
    from chaosbench.scenario import Scenario, Suite, expand_suite

    if isinstance(doc, Scenario):
        return list(doc.spec.evaluation.detectors)
    if not isinstance(doc, Suite):
        return None
    names: dict[str, None] = {}
    for scenario, _, _ in expand_suite(doc, path):
        names.update(dict.fromkeys(scenario.spec.evaluation.detectors))
    names.update(dict.fromkeys(doc.spec.detectors))
    return list(names)


def plan(refs: Sequence[CaseRef], methods: Sequence[Method], out_dir: Path) -> list[Task]:
    """Tasks for every evaluable case (valid and completed) and every available method."""
    return [Task(ref, m, out_dir) for ref in refs if ref.status == "completed" for m in methods]


def _outcomes(refs: Sequence[CaseRef], methods: Sequence[Method], out_dir: Path) -> list[CaseOutcome]:
    """Outcomes of the evaluable cases; invalid and unverified cases are listed in scores.json, not here."""
    from chaosbench.baselines.inputs import case_components, metric_columns
    from chaosbench.eval.outcomes import outcome

    out: list[CaseOutcome] = []
    for ref in refs:
        if ref.status != "completed":
            continue
        view, truth = open_view(ref), ground_truth(ref)
        comps, cols, rank_node = case_components(view), metric_columns(view), dict(view.topology.rank_node)
        for m in methods:
            result = read_result(Task(ref, m, out_dir))
            if result is not None:  # None: not run yet (interrupted); the next call runs it
                out.append(outcome(ref.id, True, truth, result, comps, cols, rank_node, m.ranks_metrics,
                                   split=ref.split, intensity=ref.intensity, target_kind=ref.target_kind))
    return out


def _explanations(refs: Sequence[CaseRef], methods: Sequence[Method], out_dir: Path) -> dict[str, object]:
    """The Analyzer's own scores (valid-format rate, fault-class accuracy, ROUGE-L vs reference chains), per fault."""
    if not any(m.name == "analyzer" for m in methods):
        return {}
    try:
        from chaosbench.detectors.analyzer.metrics import score_case, summarize
    except Exception as exc:  # noqa: BLE001 - the analyzer package is optional here
        return {"analyzer": {"error": f"cannot import chaosbench.detectors.analyzer.metrics: {exc}"}}
    analyzer = next(m for m in methods if m.name == "analyzer")
    scores = []
    for ref in refs:
        result = read_result(Task(ref, analyzer, out_dir)) if ref.status == "completed" else None
        if result is not None:
            scores.append(score_case(ref.id, result, ground_truth(ref)))
    return {"analyzer": summarize(scores)} if scores else {}


def is_archive(path: Path) -> bool:
    return Path(path).is_file() and Path(path).name.endswith((".tar.gz", ".tgz"))


@contextmanager
def open_dataset(dataset: Path, split: str) -> Iterator[tuple[Path, list[CaseRef]]]:
    """(root, cases) of a dataset directory or an exported archive (its blind cases extracted to a temporary
    directory, removed on exit; its labels read from the archive, never written to disk)."""
    if is_archive(dataset):
        from chaosbench.eval.export import open_archive

        with open_archive(dataset) as (root, labels):
            yield root, discover(root, split, labels=labels)
        return
    yield dataset, discover(dataset, split)


def default_out(dataset: Path, split: str) -> Path:
    """``<run>/eval`` for a run (``eval-dev``/``eval-test`` for one split); ``results/eval/<name>`` otherwise."""
    suffix = "" if split == "all" else f"-{split}"
    if not is_archive(dataset) and is_run_dir(dataset):
        return Path(dataset) / f"eval{suffix}"
    name = Path(dataset).resolve().name.removesuffix(".tar.gz").removesuffix(".tgz")
    return Path("results") / "eval" / f"{name}{suffix}"


def _detect(tasks: Sequence[Task], runnable: Sequence[Method], workers: int, timeout_s: float,
            ray_address: str | None, on_done: OnDone | None) -> None:
    """Run ``tasks`` against blind copies of their cases (removed afterwards)."""
    refs = list({t.case.case_id: t.case for t in tasks}.values())
    with blind_cases(refs) as copies:
        todo = [replace(t, blind=copies[t.case.case_id]) for t in tasks]
        if ray_address:
            run_ray(todo, ray_address, workers, timeout_s, on_done)
        elif workers <= 0:
            run_inline(todo, on_done)
        else:
            preload(runnable)
            run_local(todo, workers, timeout_s, on_done)


def evaluate(
    dataset_dir: Path,
    out_dir: Path | None = None,
    methods: list[str] | None = None,
    workers: int = 2,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ray_address: str | None = None,
    force: bool = False,
    split: str = "all",
    report: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_done: OnDone | None = None,
) -> Path:
    """Run, score and write the leaderboard; returns ``out_dir``.

    ``methods``: names, groups (fast, all, slow, trivial, kat, rcaeval) or ``module:function`` plugins; default
    ``fast``. ``split``: dev, test or all (a run's labels.jsonl says which case is which). ``workers=0`` runs in
    this process without timeouts (debugging). ``report`` also writes report.html. ``on_start(total, todo)`` and
    ``on_done(task, status)`` drive progress displays.
    """
    from chaosbench.report.scores import write_results

    dataset_dir = Path(dataset_dir)
    out_dir = Path(out_dir) if out_dir else default_out(dataset_dir, split)
    chosen = select(methods)
    with open_dataset(dataset_dir, split) as (_root, refs):
        availability = {m.name: m.status() for m in chosen}
        runnable = [m for m in chosen if availability[m.name][0]]
        tasks = plan(refs, runnable, out_dir)
        todo = [t for t in tasks if force or read_result(t) is None]
        if on_start:
            on_start(len(tasks), len(todo))
        t0 = time.perf_counter()
        if todo:
            _detect(todo, runnable, workers, timeout_s, ray_address, on_done)
        wall = time.perf_counter() - t0
        # every detection task is done: only now does anything derived from the labels go to out_dir
        outcomes = _outcomes(refs, runnable, out_dir)
        scores = score_methods(outcomes)
        run: dict[str, Any] = {"tasks": len(tasks), "computed": len(todo), "reused": len(tasks) - len(todo),
                               "workers": workers, "ray": ray_address, "timeout_s": timeout_s,
                               "wall_s": round(wall, 3), "split": split}
        write_results(out_dir, dataset_dir=dataset_dir, refs=refs, methods=chosen, availability=availability,
                      outcomes=outcomes, scores=scores, explanations=_explanations(refs, runnable, out_dir), run=run)
        if report:  # while an archive's cases are still extracted: the report draws from their data
            from chaosbench.report import write_report

            write_report(out_dir)
    return out_dir
