"""Bootstrap intervals and paired comparisons, checked against scipy.stats.bootstrap on known data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import bootstrap

from chaosbench.score.aggregate import CaseOutcome, compare, intensity_bin, rank_scores
from chaosbench.score.stats import (
    N_RESAMPLES,
    SEED,
    detection_intervals,
    mean_interval,
    paired_bootstrap,
    rank_intervals,
)

HITS = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0], dtype=float)


def scipy_ci(x):
    res = bootstrap((x,), np.mean, n_resamples=N_RESAMPLES, method="percentile", confidence_level=0.95,
                    random_state=np.random.default_rng(SEED), vectorized=True)
    return [res.confidence_interval.low, res.confidence_interval.high]


def test_a_rate_interval_is_scipys():
    assert mean_interval(HITS) == pytest.approx(scipy_ci(HITS))
    lo, hi = mean_interval(HITS)
    assert lo < HITS.mean() < hi and hi - lo > 0.2  # 12 cases: a wide interval


def test_rank_intervals_are_scipys_per_k_and_for_avg():
    top3 = np.maximum(HITS, np.roll(HITS, 1))
    hits = np.stack([HITS, top3, top3, np.ones_like(HITS), np.ones_like(HITS)], axis=1)
    ac, avg = rank_intervals(hits)
    assert ac[0] == pytest.approx(scipy_ci(HITS))
    assert ac[1] == pytest.approx(scipy_ci(top3))
    assert ac[4] == [1.0, 1.0]
    assert avg == pytest.approx(scipy_ci(hits.mean(axis=1)))


def test_rank_scores_carry_the_intervals():
    rankings = [["a", "b"] if h else ["b", "a"] for h in HITS]
    s = rank_scores(rankings, ["a"] * len(HITS), [2] * len(HITS))
    assert s.ac[1] == pytest.approx(HITS.mean())
    assert s.ac_ci[1] == pytest.approx(scipy_ci(HITS))
    assert s.ac_ci[2] == [1.0, 1.0]
    assert rank_scores([["a"]], ["a"], [1]).ac_ci[1] is None  # one case: no interval


def test_detection_intervals_are_scipys_for_recall():
    # all faulty: recall's per-case contributions are the 0/1 hits, so its interval is the rate's
    rows = np.array([[h, 0, 1 - h, 0, h, h] for h in HITS])
    ci = detection_intervals(rows)
    assert ci["recall"] == pytest.approx(scipy_ci(HITS))
    assert ci["fpr"] is None  # no clean case: undefined in every resample
    assert ci["precision"] == [1.0, 1.0]


def test_paired_bootstrap():
    same = paired_bootstrap(HITS, HITS)
    assert same["diff"] == 0.0 and same["p"] == 1.0
    better = paired_bootstrap(np.ones(30), np.r_[np.ones(5), np.zeros(25)])
    assert better["diff"] == pytest.approx(25 / 30) and better["p"] < 0.01 and better["ci"][0] > 0.5
    d = HITS - np.roll(HITS, 3)
    res = paired_bootstrap(HITS, np.roll(HITS, 3))
    assert res["ci"] == pytest.approx(scipy_ci(d))
    assert 0.05 < res["p"] <= 1.0  # shuffled copies of one another: no evidence of a difference


def _outcome(case, method, hit):
    return CaseOutcome(case=case, method=method, status="ok", error=None, scored=True, fault_id="f", fault_class=None,
                       realism=None, answer="a", answer_node="a", n_candidates=2, n_node_candidates=2,
                       ranking=["a", "b"] if hit else ["b", "a"], node_ranking=[], ranks_metrics=False,
                       metric_ranking=[], answer_metrics=[], n_metric_candidates=0, anomalous=None, n_events=0,
                       n_matching_events=0, detected_at=None, start=None, runtime_s=0.0)


def test_compare_pairs_by_case():
    outs = [_outcome(f"c{i}", "good", True) for i in range(20)] + [_outcome(f"c{i}", "bad", i < 4) for i in range(20)]
    res = compare(outs, "good", "bad")
    assert res["n"] == 20 and res["ac1"]["diff"] == pytest.approx(0.8) and res["ac1"]["p"] < 0.01
    assert res["avg5"]["diff"] == pytest.approx(0.8 * 0.2)  # rank 2 instead of 1: a hit from k = 2 on


def test_intensity_bins():
    assert [intensity_bin(x) for x in (0.0, 0.24, 0.25, 0.6, 1.0, None)] == \
        ["0.00-0.25", "0.00-0.25", "0.25-0.50", "0.50-0.75", "0.75-1.00", "n/a"]
