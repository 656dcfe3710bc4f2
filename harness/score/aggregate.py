"""Per-method scores, overall and per fault type, from per-(case, method) outcomes.

Only faulty cases of status "completed" count for AC@k; clean cases count only for detection (FPR).
A failed, timed-out or unavailable run keeps its empty ranking: it is a miss in every accuracy figure and is
counted in ``n_failed``.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from harness.score.detection import DetectionScores, EventCase, case_detection, event_detection, time_to_detection
from harness.score.ranking import ac_at_k, avg_at_k, chance_ac_at_k, chance_avg_at_k

K_MAX = 5


class CaseOutcome(TypedDict):
    case: str
    method: str
    status: str  # ok | failed | timeout | unavailable
    error: str | None
    scored: bool  # the case is "completed" (verified fault or clean run)
    fault_id: str | None  # None for a clean run
    fault_class: str | None
    realism: str | None
    answer: str | None  # true component (rank-2, node-1, ingress)
    answer_node: str | None  # its node (node faults: the component itself)
    n_candidates: int  # components the method could have ranked
    n_node_candidates: int  # same, with ranks folded into their nodes
    ranking: list[str]  # components, best first
    node_ranking: list[str]
    ranks_metrics: bool  # the method ranks metric columns (metric-level scores apply)
    metric_ranking: list[str]  # metric columns, best first
    answer_metrics: list[str]  # metric columns that count as the right metric (empty: not scored)
    n_metric_candidates: int
    anomalous: bool | None
    n_events: int
    n_matching_events: int
    detected_at: float | None
    start: float | None
    runtime_s: float


@dataclass(frozen=True)
class RankScores:
    n: int
    ac: dict[int, float | None]
    avg: float | None  # Avg@5
    chance_ac: dict[int, float | None]
    chance_avg: float | None
    lift: float | None


@dataclass(frozen=True)
class MethodScores:
    method: str
    n_runs: int  # every (case, method) run, clean and unscored included
    n_failed: int
    errors: dict[str, int]  # one-line error -> count
    component: RankScores | None
    node: RankScores | None
    metric: RankScores | None
    per_fault: dict[str, dict[str, RankScores | None]] = field(default_factory=dict)  # fault -> level -> scores
    # fault -> {"case": ..., "event": ...} over that fault's cases only (recall and event precision; no FPR)
    per_fault_detection: dict[str, dict[str, DetectionScores | None]] = field(default_factory=dict)
    case_detection: DetectionScores | None = None
    event_detection: DetectionScores | None = None
    time_to_detection: dict[str, float | None] = field(default_factory=dict)
    runtime: dict[str, float | None] = field(default_factory=dict)


def rank_scores(rankings: Sequence[Sequence[str]], answers: Sequence[str], n_cands: Sequence[int],
                n_answers: Sequence[int] | None = None, k_max: int = K_MAX) -> RankScores | None:
    if not rankings:
        return None
    found = [n > 0 for n in n_cands]
    ks = range(1, k_max + 1)
    avg, chance = avg_at_k(rankings, answers, k_max), chance_avg_at_k(n_cands, k_max, found, n_answers)
    return RankScores(
        n=len(rankings),
        ac={k: ac_at_k(rankings, answers, k) for k in ks},
        avg=avg,
        chance_ac={k: chance_ac_at_k(n_cands, k, found, n_answers) for k in ks},
        chance_avg=chance,
        lift=None if avg is None or chance is None else avg - chance,
    )


def _levels(outcomes: Sequence[CaseOutcome]) -> dict[str, RankScores | None]:
    faulty = [o for o in outcomes if o["scored"] and o["fault_id"] and o["answer"]]
    metric = [o for o in faulty if o["answer_metrics"] and o["ranks_metrics"]]
    return {
        "component": rank_scores([o["ranking"] for o in faulty], [o["answer"] for o in faulty],
                                 [o["n_candidates"] for o in faulty]),
        "node": rank_scores([o["node_ranking"] for o in faulty], [o["answer_node"] or o["answer"] for o in faulty],
                            [o["n_node_candidates"] for o in faulty]),
        "metric": _metric_scores(metric),
    }


def _metric_scores(outcomes: Sequence[CaseOutcome]) -> RankScores | None:
    """A metric-level hit is any acceptable metric column in the top k: score the first such position."""
    rankings, answers = [], []
    for o in outcomes:
        ok = set(o["answer_metrics"])
        first = next((m for m in o["metric_ranking"] if m in ok), o["answer_metrics"][0])
        rankings.append(o["metric_ranking"])
        answers.append(first)
    return rank_scores(rankings, answers, [o["n_metric_candidates"] for o in outcomes],
                       [len(o["answer_metrics"]) for o in outcomes])


def _runtime(outcomes: Sequence[CaseOutcome]) -> dict[str, float | None]:
    times = [o["runtime_s"] for o in outcomes if o["status"] in ("ok", "failed")]
    if not times:
        return {"n": 0, "mean_s": None, "median_s": None, "max_s": None, "total_s": 0.0}
    return {"n": len(times), "mean_s": statistics.fmean(times), "median_s": statistics.median(times),
            "max_s": max(times), "total_s": sum(times)}


def _detection(outcomes: Sequence[CaseOutcome]) -> tuple[DetectionScores | None, DetectionScores | None]:
    scored = [o for o in outcomes if o["scored"]]
    case = case_detection([o["anomalous"] for o in scored], [o["fault_id"] is not None for o in scored])
    events = event_detection([EventCase(o["fault_id"] is not None, o["n_events"], o["n_matching_events"])
                              for o in scored])
    return case, events


def _error_key(o: CaseOutcome) -> str:
    """One line per kind of failure: paths (which name the case) are folded so that like errors add up."""
    return re.sub(r"(?<![\w.*])/[^\s:;,()]+", "<path>", f"{o['status']}: {o['error'] or ''}").strip()


def score_method(method: str, outcomes: Sequence[CaseOutcome]) -> MethodScores:
    levels = _levels(outcomes)
    by_fault: dict[str, list[CaseOutcome]] = defaultdict(list)
    for o in outcomes:
        if o["fault_id"]:
            by_fault[o["fault_id"]].append(o)
    errors: dict[str, int] = defaultdict(int)
    for o in outcomes:
        if o["status"] != "ok":
            errors[_error_key(o)] += 1
    case_det, event_det = _detection(outcomes)
    faulty = [o for o in outcomes if o["scored"] and o["fault_id"]]
    return MethodScores(
        method=method,
        n_runs=len(outcomes),
        n_failed=sum(o["status"] != "ok" for o in outcomes),
        errors=dict(errors),
        component=levels["component"],
        node=levels["node"],
        metric=levels["metric"],
        per_fault={f: _levels(os_) for f, os_ in sorted(by_fault.items())},
        per_fault_detection={f: dict(zip(("case", "event"), _detection(os_), strict=True))
                             for f, os_ in sorted(by_fault.items())},
        case_detection=case_det,
        event_detection=event_det,
        time_to_detection=time_to_detection([o["detected_at"] for o in faulty], [o["start"] for o in faulty]),
        runtime=_runtime(outcomes),
    )


def score_methods(outcomes: Sequence[CaseOutcome]) -> dict[str, MethodScores]:
    """Scores for every method that appears in ``outcomes`` (insertion order kept)."""
    by_method: dict[str, list[CaseOutcome]] = defaultdict(list)
    for o in outcomes:
        by_method[o["method"]].append(o)
    return {m: score_method(m, os_) for m, os_ in by_method.items()}
