"""Per-method aggregation: which cases count where, failures as misses, per-fault breakdown."""

from __future__ import annotations

import pytest

from chaosbench.score.aggregate import CaseOutcome, score_methods


def _o(case: str, method: str, ranking: list[str], *, fault: str | None = "cpu-contention", answer: str | None = "node-1",
       status: str = "ok", scored: bool = True, anomalous: bool | None = None, metrics: list[str] | None = None,
       runtime: float = 1.0) -> CaseOutcome:
    rank_node = {"rank-0": "node-0", "rank-1": "node-1"}
    return CaseOutcome(case=case, method=method, status=status, error=None if status == "ok" else "boom",
                       scored=scored, fault_id=fault, fault_class="CPU", realism="real", answer=answer,
                       answer_node=answer, n_candidates=5, n_node_candidates=3, ranking=ranking,
                       node_ranking=[rank_node.get(r, r) for r in ranking], ranks_metrics=metrics is not None,
                       metric_ranking=metrics or [], answer_metrics=["node-1_cpu"] if fault else [],
                       n_metric_candidates=10, anomalous=anomalous, n_events=0, n_matching_events=0,
                       detected_at=None, start=100.0, runtime_s=runtime)


def test_clean_and_unscored_cases_do_not_count_for_accuracy():
    outcomes = [
        _o("a", "m", ["node-1"], anomalous=True),
        _o("b", "m", ["rank-1", "node-1"], anomalous=True),  # node level: rank-1 folds into node-1
        _o("c", "m", [], status="timeout"),  # a miss, counted as failed
        _o("d", "m", ["node-0"], fault=None, answer=None, anomalous=True),  # clean: FPR only
        _o("e", "m", ["node-1"], scored=False),  # not verified: reported only
    ]
    s = score_methods(outcomes)["m"]
    assert s.component.n == 3
    assert s.component.ac[1] == pytest.approx(1 / 3)
    assert s.component.ac[2] == pytest.approx(2 / 3)
    assert s.node.ac[1] == pytest.approx(2 / 3)
    assert s.component.chance_ac[1] == pytest.approx(1 / 5)
    assert s.component.lift == pytest.approx(s.component.avg - s.component.chance_avg)
    assert s.n_failed == 1 and s.errors == {"timeout: boom": 1}
    assert s.case_detection.tp == 2 and s.case_detection.fp == 1 and s.case_detection.fpr == 1.0
    assert s.metric is None  # the method does not rank metrics


def test_per_fault_and_metric_level():
    outcomes = [
        _o("a", "m", ["node-1"], metrics=["node-1_mem", "node-1_cpu"]),
        _o("b", "m", ["rank-0"], fault="network-delay", answer="rank-0", metrics=["rank-0_x"]),
    ]
    s = score_methods(outcomes)["m"]
    assert set(s.per_fault) == {"cpu-contention", "network-delay"}
    assert s.per_fault["cpu-contention"]["component"].ac[1] == 1.0
    assert s.metric.ac[1] == 0.0 and s.metric.ac[2] == 0.5  # the right metric is second in case a
    assert s.runtime["mean_s"] == 1.0


def test_methods_are_kept_apart():
    s = score_methods([_o("a", "x", ["node-1"]), _o("a", "y", ["node-0"])])
    assert s["x"].component.ac[1] == 1.0 and s["y"].component.ac[1] == 0.0


def test_like_errors_add_up_across_cases():
    a = _o("a", "m", [], status="failed")
    b = _o("b", "m", [], status="failed")
    a["error"] = "CaseInvalid: /data/a: no traces (traces/*.json[.gz])"
    b["error"] = "CaseInvalid: /data/b: no traces (traces/*.json[.gz])"
    assert score_methods([a, b])["m"].errors == {"failed: CaseInvalid: <path>: no traces (traces/*.json[.gz])": 2}
