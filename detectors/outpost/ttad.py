"""TTAD: trace-tree anomaly detection, cross-worker and intra-worker, vectorised.

Durations are compared in log space (noise on CPUs and GPUs is multiplicative). The duration scored
is an event's self (exclusive) time, its duration minus its children's: in tensor parallelism every
rank waits for the slowest in each collective, so inclusive durations of ``attention`` or ``layer``
are the same on every rank, while the slowed rank's own work (outside the collective) is longer.

Cross-worker: events are grouped with their peers on the other workers (same structural role,
path of ancestor names, step and occurrence), among threads of the same class (what they run, see
``waits.thread_classes``: the same pipeline stage of every replica) when the class has peers, else
among every worker (a worker alone in its class, such as a rank 0 that also samples, is compared with
all the others, not left without a reference). The expected duration of an event is the
leave-one-out median of its group, so one outlier never pulls its own reference (with mean/sigma
over a group that includes it, one outlier among n can never exceed z = sqrt(n-1)). The scale is
the robust spread (1.4826 * MAD) of these residuals pooled over every step and worker of the
same path: many samples, and a consistently slow worker stays a minority of them. MAD only by default:
spikes from preemption are flagged here and discarded by localisation's persistence test.

Intra-worker: each worker against its own history (events that ended before ``split``, the injection
time) for the
same (path, occurrence) - median and MAD of the history (history events are scored in-sample, which
gives localisation the background rate of anomalies before the fault). This sees faults that hit
every worker at once, and works with two workers.

The score of an event is the larger of the two z-scores (only slowdowns count); it is anomalous
when ``score > lam`` and it is at least ``min_excess_us`` longer than expected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from chaosbench.detectors.outpost.ttc import Forest, _mix

MAD_K = 1.4826
TAIL_Z = {0.9: 1.2816, 0.95: 1.6449, 0.99: 2.3263}  # standard-normal quantiles


@dataclass(frozen=True)
class TTADConfig:
    lam: float = 4.0
    min_rel_scale: float = 0.05  # floor of the log-space scale (~5 %): ultra-stable events
    busy_rel_scale: float = 0.01  # the same for busy-time aggregates (sums of many events: finer)
    min_excess_us: float = 5.0  # ignore slowdowns shorter than this (timer noise)
    min_dur_us: float = 1.0  # durations are floored here before the log
    min_history: int = 5  # history samples needed for the intra-worker test
    history_cap: int = 512  # history samples per (worker, path) used to fit median and scale
    min_group: int = 2  # workers needed for the cross-worker test
    tail_q: float = 0.99  # intra-worker: upper quantile of the history that also bounds the scale
    cross_tail_q: float = 0.5  # the same for cross-worker residuals: 0.5 = MAD only (persistence handles spikes)


@dataclass(frozen=True)
class Scores:
    """Per event (rows of the forest): score, expected duration and which test fired."""

    score: np.ndarray  # float64, NaN where no test applies
    expected: np.ndarray  # float64 us
    z_cross: np.ndarray
    z_intra: np.ndarray
    group_size: np.ndarray  # workers in the cross-worker group


def _loo_median(group: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out median of x within each group, and the group sizes (NaN for singletons)."""
    # one float sort on group + x (x is a log duration, well inside [0, 64))
    order = np.argsort(group * 64.0 + np.clip(x, 0.0, 63.0))
    g, v = group[order], x[order]
    n_total = g.shape[0]
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    sizes = np.diff(np.r_[starts, n_total])
    start = np.repeat(starts, sizes)
    size = np.repeat(sizes, sizes)
    rank = np.arange(n_total) - start
    m = size - 1  # values left after removing one
    lo = (m - 1) // 2
    hi = m // 2

    def pick(k: np.ndarray) -> np.ndarray:  # k-th smallest of the others
        k = np.where(k >= rank, k + 1, k)
        return v[np.minimum(start + k, n_total - 1)]

    med = np.where(m >= 1, 0.5 * (pick(lo) + pick(hi)), np.nan)
    out = np.empty(n_total)
    out[order] = med
    sz = np.empty(n_total, dtype=np.int64)
    sz[order] = size
    return out, sz


def _group_median(codes: np.ndarray, x: np.ndarray, mask: np.ndarray | None = None, q: float = 0.5) -> np.ndarray:
    """q-quantile of x per code (over rows in mask), broadcast back to every row (NaN if none)."""
    c, v = (codes, x) if mask is None else (codes[mask], x[mask])
    grouped = pd.Series(v).groupby(c)
    med = grouped.median() if q == 0.5 else grouped.quantile(q)
    table = np.full(int(codes.max()) + 1 if codes.size else 0, np.nan)
    table[med.index.to_numpy()] = med.to_numpy()
    return table[codes]


def _thin(codes: np.ndarray, mask: np.ndarray, cap: int) -> np.ndarray:
    """Keep every row of small groups and a seeded random ``cap``-sized share of large ones:
    quantiles of a few thousand samples are as good as of millions, and much cheaper."""
    counts = np.bincount(codes[mask], minlength=int(codes.max()) + 1 if codes.size else 0)
    if counts.max(initial=0) <= cap:
        return mask
    keep = np.random.default_rng(0).random(codes.shape[0]) * np.maximum(counts[codes], 1) < cap
    return mask & keep


def _robust_scale(codes: np.ndarray, r: np.ndarray, mask: np.ndarray, floor: float | np.ndarray, tail_q: float,
                  cap: int = 4000) -> np.ndarray:
    """max(1.4826 * MAD, upper-tail spread, floor) per code; the tail term widens heavy-tailed groups."""
    mask = _thin(codes, mask, cap)
    center = _group_median(codes, r, mask)
    mad = _group_median(codes, np.abs(r - center), mask)
    scale = np.maximum(MAD_K * mad, floor)
    if tail_q > 0.5:
        tail = (_group_median(codes, r, mask, tail_q) - center) / TAIL_Z[tail_q]
        scale = np.maximum(scale, np.nan_to_num(tail, nan=0.0))
    return scale


def _floor(forest: Forest, cfg: TTADConfig) -> np.ndarray | float:
    """The scale floor: per row when the forest has busy-time aggregates."""
    base = np.log1p(cfg.min_rel_scale)
    if forest.aggregate is None:
        return base
    return np.where(forest.aggregate, np.log1p(cfg.busy_rel_scale), base)


def cross_worker(forest: Forest, logd: np.ndarray, hist: np.ndarray | None, cfg: TTADConfig):
    key = _mix(_mix(_mix(forest.path, forest.role.astype(np.uint64)), (forest.step + 1).astype(np.uint64)),
               forest.occ.astype(np.uint64))
    group = pd.factorize(key)[0]
    ref, size = None, None
    if forest.thread_class is not None:  # peers of the same class first (the same pipeline stage)
        by_class = pd.factorize(_mix(key, forest.thread_class[forest.table.thread]))[0]
        alone = np.bincount(by_class)[by_class] < cfg.min_group
        if alone.any():  # a worker alone in its class (rank 0 also samples) is compared with every worker
            ref, size = _loo_median(group, logd)
        group = pd.factorize(np.where(alone, group, by_class + group.max() + 1))[0]
    ref_c, size_c = _loo_median(group, logd)
    if ref is None:
        ref, size = ref_c, size_c
    else:
        ref, size = np.where(alone, ref, ref_c), np.where(alone, size, size_c)
    # groups of one worker: duplicates of the same worker do not count as peers
    usable = size >= cfg.min_group
    resid = logd - ref
    path_code = pd.factorize(_mix(forest.path, forest.role.astype(np.uint64)))[0]
    # the scale comes from the healthy history when there is one (a fault cannot widen it)
    # without one, only the MAD (a slow worker's tail would widen an upper quantile)
    fit = usable if hist is None else usable & hist
    tail_q = cfg.cross_tail_q if hist is not None and fit.any() else 0.5
    if not fit.any():
        fit = usable
    scale = _robust_scale(path_code, np.where(usable, resid, 0.0), fit, _floor(forest, cfg), tail_q)
    z = np.where(usable, resid / scale, np.nan)
    return z, ref, size


def intra_worker(forest: Forest, logd: np.ndarray, hist: np.ndarray | None, cfg: TTADConfig):
    n = logd.shape[0]
    if hist is None or not hist.any():
        return np.full(n, np.nan), np.full(n, np.nan)
    t = forest.table
    occ = np.where(forest.step >= 0, forest.occ, 0).astype(np.uint64)
    key = _mix(_mix(_mix(forest.path, t.worker.astype(np.uint64)), forest.role.astype(np.uint64)), occ)
    codes = pd.factorize(key)[0]
    counts = np.bincount(codes[hist], minlength=int(codes.max()) + 1)
    enough = counts[codes] >= cfg.min_history
    fit = _thin(codes, hist, cfg.history_cap)
    ref = _group_median(codes, logd, fit)
    scale = _robust_scale(codes, logd, fit, _floor(forest, cfg), cfg.tail_q)
    z = np.where(enough, (logd - ref) / scale, np.nan)  # history too, in-sample: the background rate
    return z, ref


def own_time(forest: Forest) -> np.ndarray:
    """What is scored: the self (exclusive) time of each event (its duration when it has no children)."""
    return forest.table.dur if forest.self_dur is None else forest.self_dur


def history(forest: Forest, split_us: float | None) -> np.ndarray | None:
    """Events that ended before the split: an event still running at the injection may be hit by it."""
    t = forest.table
    return None if split_us is None else t.ts + t.dur < split_us


def score(forest: Forest, split_us: float | None, cfg: TTADConfig) -> Scores:
    own = own_time(forest)
    logd = np.log(np.maximum(own, cfg.min_dur_us))
    hist = history(forest, split_us)
    zc, refc, size = cross_worker(forest, logd, hist, cfg)
    zi, refi = intra_worker(forest, logd, hist, cfg)
    use_intra = np.nan_to_num(zi, nan=-np.inf) > np.nan_to_num(zc, nan=-np.inf)
    s = np.where(use_intra, zi, zc)
    # expected duration: the event with its own time at the reference (children as recorded)
    expected = forest.table.dur - own + np.exp(np.where(use_intra, refi, refc))
    return Scores(s, expected, zc, zi, size)


def anomalous(forest: Forest, scores: Scores, lam: float, cfg: TTADConfig) -> np.ndarray:
    excess = forest.table.dur - scores.expected
    return (np.nan_to_num(scores.score, nan=-np.inf) > lam) & (excess >= cfg.min_excess_us)
