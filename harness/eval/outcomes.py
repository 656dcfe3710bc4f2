"""Join each method's answer with the case's ground truth into ``CaseOutcome`` records for scoring.

Component level: the ranked components against the true component. Node level: ranks folded into their nodes
(topology.rank_node) against the true node (a node fault blamed on one of its ranks is a hit). Metric level, for
methods that rank metric columns: the true component's columns whose metric name carries the fault's key signal
(``FaultSpec.key_metrics`` for our faults, ``RCAEVAL_KEY_METRICS`` for RCAEval's; case-insensitive substrings; a
fault without key metrics is not scored at metric level).
"""

from __future__ import annotations

from chaosbench.case import GroundTruth
from chaosbench.detectors.api import Result
from chaosbench.faults.catalog import fault_modules
from chaosbench.score.aggregate import CaseOutcome
from chaosbench.score.detection import event_matches
from chaosbench.score.ranking import to_node_level

# RCAEval's fault folder suffixes -> substrings of the metric names that show them
RCAEVAL_KEY_METRICS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu",),
    "mem": ("mem",),
    "disk": ("disk",),
    "delay": ("latency", "lat"),
    "loss": ("latency", "lat", "err"),
}


def key_metrics(fault_id: str | None) -> tuple[str, ...]:
    """Substrings of the metric names that show ``fault_id`` (FAULTS.md verify signals); () when unknown."""
    modules = fault_modules()
    if fault_id in modules:
        return modules[fault_id].SPEC.key_metrics
    return RCAEVAL_KEY_METRICS.get(fault_id or "", ())


def answer_metrics(truth: GroundTruth, columns: list[str]) -> list[str]:
    comp, keys = truth.get("component"), key_metrics(truth.get("fault_id"))
    if not comp or not keys:
        return []
    return [c for c in columns if c.partition("_")[0] == comp and any(k in c.partition("_")[2].lower() for k in keys)]


def outcome(case_id: str, scored: bool, truth: GroundTruth, result: Result, components: list[str],
            columns: list[str], rank_node: dict[str, str], ranks_metrics: bool, *, split: str | None = None,
            intensity: float | None = None, target_kind: str | None = None) -> CaseOutcome:
    """One (case, method) record; ``components`` are the candidates, ``columns`` the metric columns; ``split``,
    ``intensity`` and ``target_kind`` come from the run's labels."""
    ok = result.status == "ok"
    ranking = result.components() if ok else []
    node_cands = to_node_level(components, rank_node)
    target = truth.get("component")
    window = (truth["start"], truth["end"] or truth["start"]) if truth.get("start") is not None else None
    matching = sum(event_matches(e.component, e.ts, e.dur, target, window, rank_node) for e in result.events)
    return CaseOutcome(
        case=case_id,
        method=result.method,
        status=result.status,
        error=result.error,
        scored=scored,
        fault_id=truth.get("fault_id"),
        fault_class=truth.get("fault_class"),
        realism=truth.get("realism"),
        answer=target,
        answer_node=rank_node.get(target or "", truth.get("node") or target),
        n_candidates=len(components) if target in components else 0,
        n_node_candidates=len(node_cands),
        ranking=ranking,
        node_ranking=to_node_level(ranking, rank_node),
        ranks_metrics=ranks_metrics,
        metric_ranking=[rc.metric for rc in result.ranking if rc.metric] if ok else [],
        answer_metrics=answer_metrics(truth, columns),
        n_metric_candidates=len(columns),
        anomalous=result.anomalous if ok else None,
        n_events=len(result.events) if ok else 0,
        n_matching_events=matching if ok else 0,
        detected_at=result.detected_at if ok else None,
        start=truth.get("start"),
        runtime_s=result.runtime_s,
        split=split,
        intensity=intensity,
        target_kind=target_kind,
    )
