"""Confidence intervals and paired comparisons, by bootstrap over cases (``scipy.stats.bootstrap``).

Intervals are 95 %, percentile method, 2000 resamples, seed 0: reproducible run to run. Percentile rather than
BCa because BCa is undefined on the degenerate distributions small benchmarks produce (every case a hit, every
clean case quiet); with many cases the two agree. The resampling unit is the case: AC@k and Avg@k resample the
faulty cases of a level, detection scores every scored case (precision, recall, F1 and FPR of one resample come
from the same cases). A ratio undefined in a resample (no predicted positive, no clean case drawn) leaves that
resample out of its percentiles (``nanpercentile`` over scipy's bootstrap distribution); without such resamples
the interval is exactly scipy's. With fewer than two cases there is no interval (None).

Paired comparison of two methods on the same cases: the per-case difference (hit at 1, or the case's mean hit over
k = 1..5 for Avg@5) is bootstrapped; the interval is that of the mean difference and the p-value two-sided,
(1 + #{|d* - d| >= |d|}) / (B + 1) with d the observed and d* the resampled mean differences (the bootstrap
distribution shifted to the null of no difference; Efron & Tibshirani 1993, ch. 16).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0
METHOD = "percentile"

Interval = list[float] | None  # [low, high]


def _bootstrap(data: np.ndarray, statistic: Callable, seed: int):
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate or undefined resamples: handled below
        return bootstrap((data,), statistic, n_resamples=N_RESAMPLES, method=METHOD, vectorized=True,
                         confidence_level=CONFIDENCE, random_state=np.random.default_rng(seed))


def _intervals(dist: np.ndarray) -> list[Interval]:
    dist = np.atleast_2d(np.asarray(dist, dtype=float))
    alpha = (1 - CONFIDENCE) / 2
    out: list[Interval] = []
    for row in dist:
        row = row[~np.isnan(row)]
        out.append(None if row.size == 0 else
                   [float(np.percentile(row, alpha * 100)), float(np.percentile(row, (1 - alpha) * 100))])
    return out


def bootstrap_intervals(statistic: Callable[[np.ndarray], np.ndarray], n: int, k: int = 1,
                        seed: int = SEED) -> list[Interval]:
    """Intervals of the ``k`` values of a statistic over ``n`` cases. ``statistic(idx)`` gets case indices of shape
    (..., n) and returns shape (k, ...) (or (...) when k is 1); all None when n < 2."""
    if n < 2:
        return [None] * k

    def stat(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(np.moveaxis(idx, axis, -1))

    return _intervals(_bootstrap(np.arange(n), stat, seed).bootstrap_distribution)


def mean_interval(values: Sequence[float], seed: int = SEED) -> Interval:
    """Interval of a plain mean (a rate of 0/1 values, say)."""
    x = np.asarray(values, dtype=float)
    return bootstrap_intervals(lambda idx: x[idx].mean(axis=-1), len(x), 1, seed)[0]


def rank_intervals(hits: np.ndarray, seed: int = SEED) -> tuple[list[Interval], Interval]:
    """(AC@1..AC@K intervals, Avg@K interval) from per-case hits of shape (n, K): hits[i, k-1] = answer in top k."""
    hits = np.asarray(hits, dtype=float).reshape(len(hits), -1)
    k = hits.shape[1]

    def stat(idx: np.ndarray) -> np.ndarray:
        ac = hits[idx].mean(axis=-2)  # (..., K)
        both = np.concatenate([ac, ac.mean(axis=-1, keepdims=True)], axis=-1)
        return np.moveaxis(both, -1, 0)

    ivs = bootstrap_intervals(stat, len(hits), k + 1, seed)
    return ivs[:k], ivs[k]


DETECTION_FIELDS = ("precision", "recall", "f1", "fpr")


def detection_values(sums: np.ndarray) -> np.ndarray:
    """precision, recall, F1, FPR from summed rows [tp, fp, fn, tn, precision numerator, denominator] (last axis);
    NaN where undefined. F1 is 0 when recall is 0."""
    tp, fp, fn, tn, pnum, pden = np.moveaxis(np.asarray(sums, dtype=float), -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(pden > 0, pnum / pden, np.nan)
        r = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(r == 0, 0.0, np.where(p + r > 0, 2 * p * r / (p + r), np.where(np.isnan(p + r), np.nan, 0.0)))
        fpr = np.where(fp + tn > 0, fp / (fp + tn), np.nan)
    return np.stack([p, r, f1, fpr])


def detection_intervals(rows: np.ndarray, seed: int = SEED) -> dict[str, Interval]:
    """Intervals of precision, recall, F1 and FPR from per-case rows [tp, fp, fn, tn, pnum, pden]."""
    rows = np.asarray(rows, dtype=float).reshape(-1, 6)
    ivs = bootstrap_intervals(lambda idx: detection_values(rows[idx].sum(axis=-2)), len(rows), 4, seed)
    return dict(zip(DETECTION_FIELDS, ivs, strict=True))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], seed: int = SEED) -> dict[str, float | int | Interval]:
    """Mean of a - b over paired cases, its interval and a two-sided bootstrap p-value (see the module doc)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    if n < 2:
        return {"n": n, "diff": float(d.mean()) if n else None, "ci": None, "p": None}
    res = _bootstrap(d, lambda x, axis=-1: x.mean(axis=axis), seed)
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    obs = float(d.mean())
    extreme = int(np.sum(np.abs(dist - obs) >= abs(obs) - 1e-12))
    return {"n": n, "diff": obs, "ci": _intervals(dist)[0], "p": (1 + extreme) / (len(dist) + 1)}
