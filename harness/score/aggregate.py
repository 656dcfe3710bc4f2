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
from typing import Any, NotRequired, TypedDict

import numpy as np

from chaosbench.score.detection import DetectionScores, EventCase, case_detection, event_detection, time_to_detection
from chaosbench.score.ranking import ac_at_k, avg_at_k, chance_ac_at_k, chance_avg_at_k, hit_at_k
from chaosbench.score.stats import Interval, paired_bootstrap, rank_intervals

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
    split: NotRequired[str | None]  # dev | test (run layout)
    intensity: NotRequired[float | None]  # the fault's drawn intensity in [0, 1] (campaigns)
    target_kind: NotRequired[str | None]  # rank | node


@dataclass(frozen=True)
class RankScores:
    n: int
    ac: dict[int, float | None]
    avg: float | None  # Avg@5
    chance_ac: dict[int, float | None]
    chance_avg: float | None
    lift: float | None
    ac_ci: dict[int, Interval] = field(default_factory=dict)  # 95 % bootstrap interval per k
    avg_ci: Interval = None


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
    # intensity bin ("0.00-0.25", ..., "n/a") -> component-level scores over that bin's faulty cases
    per_intensity: dict[str, RankScores | None] = field(default_factory=dict)


def rank_scores(rankings: Sequence[Sequence[str]], answers: Sequence[str], n_cands: Sequence[int],
                n_answers: Sequence[int] | None = None, k_max: int = K_MAX) -> RankScores | None:
    if not rankings:
        return None
    found = [n > 0 for n in n_cands]
    ks = range(1, k_max + 1)
    avg, chance = avg_at_k(rankings, answers, k_max), chance_avg_at_k(n_cands, k_max, found, n_answers)
    ac_ci, avg_ci = rank_intervals(hits_matrix(rankings, answers, k_max))
    return RankScores(
        n=len(rankings),
        ac={k: ac_at_k(rankings, answers, k) for k in ks},
        avg=avg,
        chance_ac={k: chance_ac_at_k(n_cands, k, found, n_answers) for k in ks},
        chance_avg=chance,
        lift=None if avg is None or chance is None else avg - chance,
        ac_ci=dict(zip(ks, ac_ci, strict=True)),
        avg_ci=avg_ci,
    )


def hits_matrix(rankings: Sequence[Sequence[str]], answers: Sequence[str], k_max: int = K_MAX) -> np.ndarray:
    """(n, k_max) 0/1: is case i's answer in its top k (column k-1)."""
    return np.array([[float(hit_at_k(r, a, k)) for k in range(1, k_max + 1)] for r, a in zip(rankings, answers)],
                    dtype=float).reshape(len(rankings), k_max)


INTENSITY_BINS = (0.25, 0.5, 0.75)


def intensity_bin(x: float | None) -> str:
    """Quarter of [0, 1] the fault's intensity falls in ("0.00-0.25" ... "0.75-1.00"), or "n/a"."""
    if x is None:
        return "n/a"
    edges = (0.0, *INTENSITY_BINS, 1.0)
    i = sum(x >= e for e in INTENSITY_BINS)
    return f"{edges[i]:.2f}-{edges[i + 1]:.2f}"


def _per_intensity(outcomes: Sequence[CaseOutcome]) -> dict[str, RankScores | None]:
    faulty = [o for o in outcomes if o["scored"] and o["fault_id"] and o["answer"]]
    bins: dict[str, list[CaseOutcome]] = defaultdict(list)
    for o in faulty:
        bins[intensity_bin(o.get("intensity"))].append(o)
    return {b: rank_scores([o["ranking"] for o in os_], [o["answer"] for o in os_],
                           [o["n_candidates"] for o in os_]) for b, os_ in sorted(bins.items())}


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
    events = event_detection([EventCase(o["fault_id"] is not None, o["n_events"], o["n_matching_events"],
                                        o["status"] != "ok") for o in scored])
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
        per_intensity=_per_intensity(outcomes),
    )


def score_methods(outcomes: Sequence[CaseOutcome]) -> dict[str, MethodScores]:
    """Scores for every method that appears in ``outcomes`` (insertion order kept)."""
    by_method: dict[str, list[CaseOutcome]] = defaultdict(list)
    for o in outcomes:
        by_method[o["method"]].append(o)
    return {m: score_method(m, os_) for m, os_ in by_method.items()}


def _case_values(outcomes: Sequence[CaseOutcome]) -> dict[str, tuple[float, float]]:
    """case -> (hit at 1, mean hit over k = 1..K_MAX) on the component level, faulty scored cases only."""
    out = {}
    for o in outcomes:
        if o["scored"] and o["fault_id"] and o["answer"]:
            h = hits_matrix([o["ranking"]], [o["answer"]])[0]
            out[o["case"]] = (float(h[0]), float(h.mean()))
    return out


def compare(outcomes: Sequence[CaseOutcome], a: str, b: str) -> dict[str, Any]:
    """Paired bootstrap of method ``a`` against ``b`` on the faulty cases both ran: AC@1 and Avg@5 differences."""
    va = _case_values([o for o in outcomes if o["method"] == a])
    vb = _case_values([o for o in outcomes if o["method"] == b])
    cases = sorted(set(va) & set(vb))
    return {"a": a, "b": b, "n": len(cases),
            "ac1": paired_bootstrap([va[c][0] for c in cases], [vb[c][0] for c in cases]),
            "avg5": paired_bootstrap([va[c][1] for c in cases], [vb[c][1] for c in cases])}


TRIVIAL = ("random", "constant")


def comparisons(outcomes: Sequence[CaseOutcome], scores: dict[str, MethodScores]) -> list[dict[str, Any]]:
    """Each method against the best trivial baseline (higher component Avg@5 of random and constant), and the top
    two methods (by component Avg@5) against each other."""
    def avg(m: str) -> float:
        comp = scores[m].component
        return comp.avg if comp and comp.avg is not None else -1.0

    scored = [m for m in scores if scores[m].component is not None]
    trivial = [m for m in TRIVIAL if m in scored]
    out = []
    if trivial:
        base = max(trivial, key=avg)
        out += [{**compare(outcomes, m, base), "kind": "vs-baseline"} for m in scored if m != base]
    top = sorted(scored, key=lambda m: (-avg(m), m))[:2]
    if len(top) == 2:
        out.append({**compare(outcomes, top[0], top[1]), "kind": "top-two"})
    return out
