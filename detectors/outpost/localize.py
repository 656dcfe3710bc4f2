"""Localisation: deepest anomalous events, component ranking, case verdict.

- An anomalous event is *localized* when none of its children is anomalous: the deepest
  anomalous event of its chain (a slow ``aten::linear`` rather than the ``mlp``, ``layer.3``,
  ``model.forward`` above it).
- Components are ranked per (worker, thread) by the sum of their localized scores (capped per
  event). Waits (collectives, send/recv, synchronisation, anything on a communication thread or
  stream: ``waits``) are weighted down: in tensor parallelism the *healthy* ranks wait in the
  collective for the slow one, in a pipeline the stages next to a slow one wait in send/recv, in
  data parallelism the other replicas wait in the gradient all-reduce. Waits are victims: threads
  whose compute excess time is at least ``explain_share`` of the longest wait (they explain it)
  come first, whatever the waits' own scores (``rank_threads``).
- Collective anomalies (or events with a collective child) in a step where another worker has a
  non-collective anomaly are dropped as victims (they waited for the slow worker).
- Persistence decides, not single events: on a loaded CPU a preempted op is 10-100x slower
  and such spikes hit some step of every worker; a fault hits the same place step after step.
  A unit is a step (``args.step``, ``#N``, or the occurrence of the longest-running root), and
  evidence is kept per (worker, thread, path of names). With a split (the injection time),
  events before it are the healthy history. Each path is a one-sided Fisher exact test
  (hypergeometric tail) of its rate of anomalous units after the split against the same
  worker's rate on the same path before it (without a split: against the same path on the
  peer workers). The family is every path with a localized anomaly in the case.
- The case verdict is a test of the global null (no path changed): Simes' combination of the
  family's p-values at level ``alpha`` (valid when the tests are positively dependent, as paths
  hit in the same steps are), counting only paths anomalous in at least ``min_units`` units whose
  rate grew by at least ``min_effect`` (a significant but negligible increase is not a fault).
  A hang is the other way to be anomalous: one event whose excess time covers ``min_time_share``
  more of the window after the split than before it (no count of units can show it).
- Given an anomalous case (the error that matters, a false alarm on a healthy run, is controlled
  by the verdict), the paths reported (events, ranking) are those whose own test has p at most
  ``report_p`` (with the same minimum units and effect), and the hangs: weaker evidence of the
  faulty worker counts for localisation (a victim's collectives are often the clearest paths).
  Components are ranked by the evidence of these paths (score after the split minus the path's
  own background, scaled to the same number of units).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import exp, lgamma

import numpy as np
import pandas as pd

from chaosbench.detectors.outpost.ttad import Scores
from chaosbench.detectors.outpost.ttc import Forest
from chaosbench.detectors.outpost.waits import WAIT, waits

COLLECTIVE = WAIT


@dataclass(frozen=True)
class LocalizeConfig:
    min_units: int = 3
    alpha: float = 0.01  # case verdict: level of the global test (Simes over the paths' Fisher tests)
    report_p: float = 0.05  # paths reported in an anomalous case: their own test's p-value at most this
    min_effect: float = 0.05  # a path counts only if its anomalous-unit rate grew by at least this (share of units)
    min_time_share: float = 0.25  # or: excess time after the split, as a share of that window, above its own rate
    collective_weight: float = 0.25
    score_cap: float = 50.0
    explain_share: float = 0.25  # a compute thread explains the waits when its excess time is this share of the longest
    max_events: int = 500  # localized events reported in detail (all are counted)


@dataclass(frozen=True)
class ThreadRank:
    worker: int  # index into table.workers
    thread: int  # index into table.threads
    score: float
    events: int
    units: int
    cause: bool = True  # compute evidence that explains the waits (else: waits, or compute too small to explain them)


@dataclass(frozen=True)
class Localization:
    anomalous: bool
    localized: np.ndarray  # rows, best score first
    ranking: tuple[ThreadRank, ...]
    flagged_workers: tuple[int, ...]
    first_ts_us: float | None  # earliest localized event on a flagged worker
    n_anomalous: int


def deepest(forest: Forest, anom: np.ndarray) -> np.ndarray:
    """Rows that are anomalous and have no anomalous child."""
    has_child = np.zeros(anom.shape[0], dtype=bool)
    p = forest.parent[anom]
    has_child[p[p >= 0]] = True
    return np.flatnonzero(anom & ~has_child)


def is_collective(forest: Forest, rows: np.ndarray) -> np.ndarray:
    """Waits: communication or synchronisation by name, or on a communication thread (waits.waits)."""
    return (waits(forest) if forest.wait is None else forest.wait)[rows]


def victims(forest: Forest, rows: np.ndarray, coll: np.ndarray, excess: np.ndarray,
            cause_share: float = 0.25) -> np.ndarray:
    """Collective anomalies explained by another worker's slowness: in the same step another worker's
    non-collective anomalies add up to at least ``cause_share`` of the collective's excess (it waited
    for that worker). A wait far longer than any peer's extra work (a hang, a slow link) is kept, and
    so are steps with only collective anomalies (network)."""
    step = forest.step[rows]
    worker = forest.table.worker[rows].astype(np.int64)
    cause = ~coll & (step >= 0)
    out = np.zeros(rows.shape[0], dtype=bool)
    if not cause.any() or not coll.any():
        return out
    per = pd.DataFrame({"step": step[cause], "worker": worker[cause], "x": excess[cause]})
    per = per.groupby(["step", "worker"], as_index=False)["x"].sum().sort_values("x", ascending=False, kind="stable")
    top = per.groupby("step").nth(0).set_index("step")
    second = per.groupby("step").nth(1).set_index("step")["x"]
    cand = np.flatnonzero(coll & np.isin(step, top.index.to_numpy()))
    if cand.size:
        info = top.reindex(step[cand])
        other = np.where(info["worker"].to_numpy() == worker[cand],
                         second.reindex(step[cand]).fillna(0.0).to_numpy(), info["x"].to_numpy())
        out[cand] = other >= cause_share * excess[cand]
    return out


def units_of(forest: Forest, rows: np.ndarray) -> np.ndarray:
    """A step number when known, else (negative) the root ancestor row."""
    return np.where(forest.step[rows] >= 0, forest.step[rows], -2 - forest.root[rows])


def _unit_totals(forest: Forest, split_us: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Units per worker before and after the split (counted on root events)."""
    t = forest.table
    roots = np.flatnonzero(forest.parent < 0)
    n_workers = len(t.workers)
    if roots.size == 0:
        return np.zeros(n_workers), np.zeros(n_workers)
    key = pd.factorize(t.worker[roots].astype(np.int64) * (1 << 40) + units_of(forest, roots))[0]
    first = np.unique(key, return_index=True)[1]  # one root per (worker, unit)
    r = roots[first]
    post = np.ones(first.shape[0], dtype=bool) if split_us is None else t.ts[r] + t.dur[r] >= split_us
    w = t.worker[roots[first]]
    return (np.bincount(w[~post], minlength=n_workers).astype(float),
            np.bincount(w[post], minlength=n_workers).astype(float))


def _windows(forest: Forest, split_us: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Per worker: microseconds of trace before and after the split (first start to last end)."""
    t = forest.table
    n_workers = len(t.workers)
    lo = np.full(n_workers, np.inf)
    hi = np.full(n_workers, -np.inf)
    np.minimum.at(lo, t.worker, t.ts)
    np.maximum.at(hi, t.worker, t.ts + t.dur)
    if split_us is None:
        return np.zeros(n_workers), np.maximum(hi - lo, 0.0)
    return np.clip(split_us - lo, 0.0, None), np.clip(hi - split_us, 0.0, None)


def _path_units(forest: Forest, paths: np.ndarray, units: np.ndarray) -> pd.Series:
    """Per path (of ``paths``): the units of every worker that runs it, summed."""
    code = pd.Index(paths).get_indexer(forest.path)
    rows = np.flatnonzero(code >= 0)
    n_workers = len(forest.table.workers)
    pairs = np.unique(code[rows].astype(np.int64) * n_workers + forest.table.worker[rows])
    total = np.bincount(pairs // n_workers, weights=units[pairs % n_workers], minlength=len(paths))
    return pd.Series(total, index=paths)


def fisher_greater(k1: np.ndarray, n1: np.ndarray, k0: np.ndarray, n0: np.ndarray) -> np.ndarray:
    """One-sided Fisher exact p-values: P(K1 >= k1) for the 2x2 tables [[k1, n1 - k1], [k0, n0 - k0]]
    with fixed margins (hypergeometric upper tail). Counts are clipped into their totals; an empty
    reference (n0 = 0) gives p = 1."""
    n1 = np.asarray(n1, dtype=float)
    n0 = np.asarray(n0, dtype=float)
    k1 = np.clip(np.asarray(k1, dtype=float), 0.0, n1)
    k0 = np.clip(np.asarray(k0, dtype=float), 0.0, n0)
    p = np.ones(n1.shape[0] if n1.ndim else 1)
    for i in np.flatnonzero(np.broadcast_to((n0 > 0) & (k1 > 0), p.shape)):
        p[i] = hypergeom_sf(int(k1.flat[i]), int(n1.flat[i] + n0.flat[i]), int(k1.flat[i] + k0.flat[i]),
                            int(n1.flat[i]))
    return p if n1.ndim else p[:1].reshape(())


def _log_comb(n: int, k: int) -> float:
    return lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)


def hypergeom_sf(k: int, total: int, good: int, draws: int) -> float:
    """P(X >= k) for X ~ Hypergeometric(``total`` items, ``good`` of them good, ``draws`` drawn): the
    first term by log-gamma, the others by the ratio of consecutive terms, summed in log space (no
    scipy.stats: its import alone costs about a second of every ``detect outpost`` call)."""
    lo, hi = max(0, draws - (total - good)), min(draws, good)
    if k <= lo:
        return 1.0
    if k > hi:
        return 0.0
    first = _log_comb(good, k) + _log_comb(total - good, draws - k) - _log_comb(total, draws)
    j = np.arange(k, hi, dtype=float)  # term j+1 / term j
    steps = np.log((good - j) * (draws - j)) - np.log((j + 1) * (total - good - draws + j + 1))
    logs = first + np.r_[0.0, np.cumsum(steps)]
    top = float(logs.max())
    return min(1.0, exp(top) * float(np.exp(logs - top).sum()))


def bh_reject(p: np.ndarray, q: float) -> np.ndarray:
    """Benjamini-Hochberg step-up at false-discovery rate ``q``. It rejects something exactly when
    Simes' test of the global null (min_i m p_(i) / i <= q) rejects."""
    p = np.asarray(p, dtype=float)
    m = p.shape[0]
    out = np.zeros(m, dtype=bool)
    if m == 0:
        return out
    order = np.argsort(p, kind="stable")
    below = np.flatnonzero(p[order] <= q * np.arange(1, m + 1) / m)
    if below.size:
        out[order[: below[-1] + 1]] = True
    return out


def _paths(df: pd.DataFrame, pre_units: np.ndarray, post_units: np.ndarray, pre_us: np.ndarray,
           post_us: np.ndarray, cfg: LocalizeConfig, has_history: bool,
           path_units: pd.Series | None = None) -> tuple[pd.DataFrame, bool]:
    """Per (worker, thread, path): evidence after the split, its own background before it, its
    test, and whether it is reported (``persists``); and the case verdict.

    The test: among the worker's units (steps) after the split, are clearly more anomalous on this
    path than among its units before it? One-sided Fisher exact test per path. The family is
    every path with a localized anomaly in the case; paths that fail ``min_units`` or
    ``min_effect`` (and paths anomalous only before the split) stay in it with p = 1. The case is
    anomalous when Simes' global test rejects at ``alpha`` (= Benjamini-Hochberg at ``alpha``
    rejects a path): a clean run is flagged with probability about ``alpha`` however many paths
    it has. Anomalous units of a healthy run are close to independent from step to step
    (binomial dispersion ~1 on real clean runs), which the Fisher test assumes. The paths
    reported in an anomalous case are those with p at most ``report_p``. A hang (excess
    time covering ``min_time_share`` more of the window after the split than of the window before
    it: one event that lasts most of the window) is anomalous and reported in any case.
    Without a history, the reference of a path is the same path on the other workers (their
    pooled units; ``path_units``: units of every worker that runs the path, anomalous there or not):
    noise common to every worker, such as OS scheduling on a shared host, does not single out one
    worker."""
    keys = ["worker", "thread", "path"]
    post = df[df["post"]].groupby(keys).agg(score=("s", "sum"), events=("s", "size"), units=("unit", "nunique"),
                                            excess_us=("excess", "sum"))
    pre = df[~df["post"]].groupby(keys).agg(bg_score=("s", "sum"), bg_units=("unit", "nunique"),
                                            bg_excess_us=("excess", "sum"))
    family = len(post.index.union(pre.index))  # every path with a localized anomaly is a test
    agg = post.join(pre, how="left").fillna({"bg_score": 0.0, "bg_units": 0.0, "bg_excess_us": 0.0})
    w = agg.index.get_level_values("worker").to_numpy()
    n1, n0 = post_units[w], pre_units[w]
    k1, k0 = agg["units"].to_numpy(dtype=float), agg["bg_units"].to_numpy()
    agg["excess"] = agg["score"] - agg["bg_score"] * n1 / np.maximum(n0, 1.0)
    if not has_history:
        path = agg.index.get_level_values("path").to_numpy()
        k_path = pd.Series(k1).groupby(path).transform("sum").to_numpy()
        n_path = pd.Series(n1).groupby(path).transform("sum").to_numpy()
        if path_units is not None:  # peers without any anomaly on the path are references too
            n_path = np.maximum(n_path, path_units.reindex(path).fillna(0.0).to_numpy())
        k0, n0 = k_path - k1, n_path - n1  # the peers' pooled units
        family = len(agg)
    effect = k1 / np.maximum(n1, 1.0) - np.minimum(k0, n0) / np.maximum(n0, 1.0)
    p = fisher_greater(k1, n1, k0, n0)
    p = np.where((k1 >= cfg.min_units) & (effect >= cfg.min_effect), p, 1.0)
    # paths anomalous only before the split complete the family with p = 1
    padded = np.r_[p, np.ones(max(family - p.shape[0], 0))]
    anomalous = bool(bh_reject(padded, cfg.alpha).any())
    reported = (p <= cfg.report_p) & anomalous
    agg["p"], agg["effect"] = p, effect
    if has_history:
        share1 = agg["excess_us"].to_numpy() / np.maximum(post_us[w], 1.0)
        share0 = agg["bg_excess_us"].to_numpy() / np.maximum(pre_us[w], 1.0)
        hang = share1 - share0 >= cfg.min_time_share
        anomalous |= bool(hang.any())
        reported |= hang
    agg["persists"] = reported
    return agg, anomalous


def rank_threads(persistent: pd.DataFrame, wait: pd.Series, cfg: LocalizeConfig) -> tuple[ThreadRank, ...]:
    """Waits are victims: threads whose compute excess time (non-wait paths) is at least
    ``explain_share`` of the largest excess time any thread spent waiting come first, by their compute
    evidence; then every other thread with evidence, by its evidence (waits weighted down already)."""
    p = persistent.assign(wait=wait.reindex(persistent.index).fillna(False).astype(bool).to_numpy())
    p = p.assign(cause=np.where(p["wait"], 0.0, p["excess"]), cause_us=np.where(p["wait"], 0.0, p["excess_us"]),
                 wait_us=np.where(p["wait"], p["excess_us"], 0.0))
    per = p.groupby(["worker", "thread"]).agg(score=("excess", "sum"), cause=("cause", "sum"),
                                              cause_us=("cause_us", "sum"), wait_us=("wait_us", "sum"),
                                              events=("events", "sum"), units=("units", "max"))
    longest_wait = float(per["wait_us"].max()) if len(per) else 0.0
    per["is_cause"] = (per["cause"] > 0) & (per["cause_us"] >= cfg.explain_share * longest_wait)
    per["key"] = np.where(per["is_cause"], per["cause"], per["score"])
    per = per[per["key"] > 0].sort_values(["is_cause", "key"], ascending=False, kind="stable")
    return tuple(ThreadRank(int(w), int(th), float(r.key), int(r.events), int(r.units), bool(r.is_cause))
                 for (w, th), r in per.iterrows())


def localize(forest: Forest, scores: Scores, anom: np.ndarray, cfg: LocalizeConfig,
             split_us: float | None = None) -> Localization:
    rows = deepest(forest, anom)
    coll = is_collective(forest, rows)
    t = forest.table
    excess = np.maximum(t.dur[rows] - scores.expected[rows], 0.0)
    # scores are on self time: a parent of a collective no longer carries the wait, only collectives are victims
    keep = ~victims(forest, rows, coll, excess)
    rows, coll, excess = rows[keep], coll[keep], excess[keep]
    s = np.minimum(scores.score[rows], cfg.score_cap) * np.where(coll, cfg.collective_weight, 1.0)
    end = t.ts[rows] + t.dur[rows]
    post = np.ones(rows.shape[0], dtype=bool) if split_us is None else end >= split_us
    df = pd.DataFrame({"worker": t.worker[rows], "thread": t.thread[rows], "path": forest.path[rows], "s": s,
                       "post": post, "unit": units_of(forest, rows),
                       "excess": excess, "wait": coll})
    pre_u, post_u = _unit_totals(forest, split_us)
    pre_us, post_us = _windows(forest, split_us)
    path_units = None if split_us is not None else _path_units(forest, df["path"].unique(), post_u)
    paths, verdict = _paths(df, pre_u, post_u, pre_us, post_us, cfg, split_us is not None, path_units)
    persistent = paths[paths["persists"]]
    ranking = rank_threads(persistent, df.groupby(["worker", "thread", "path"])["wait"].first(), cfg)
    flagged = tuple(sorted({int(w) for w in persistent.index.get_level_values("worker")}))
    # reported events: after the split (before it is the healthy history), on persistent paths only
    on_path = pd.MultiIndex.from_arrays([df["worker"], df["thread"], df["path"]]).isin(persistent.index)
    sel = post & on_path
    rows, s = rows[sel], s[sel]
    rows = rows[np.argsort(-s, kind="stable")]
    first = float(t.ts[rows].min()) if rows.size else None
    return Localization(verdict and bool(flagged), rows, ranking, flagged, first, int(anom.sum()))
