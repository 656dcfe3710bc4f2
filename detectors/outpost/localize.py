"""Localisation: deepest anomalous events, component ranking, case verdict.

- An anomalous event is *localized* when none of its children is anomalous: the deepest
  anomalous event of its chain (a slow ``aten::linear`` rather than the ``mlp``, ``layer.3``,
  ``model.forward`` above it).
- Components are ranked per (worker, thread) by the sum of their localized scores (capped per
  event). Collective events (allreduce, NCCL/gloo kernels, waits, synchronisation) are weighted
  down: in tensor parallelism the *healthy* ranks wait in the collective for the slow one, so a
  long collective is more often a victim than a cause.
- Collective anomalies (or events with a collective child) in a step where another worker has a
  non-collective anomaly are dropped as victims (they waited for the slow worker).
- Persistence decides, not single events: on a loaded CPU a preempted op is 10-100x slower
  and such spikes hit some step of every worker; a fault hits the same place step after step.
  A unit is a step (``args.step``, ``#N``, or the occurrence of the longest-running root), and
  evidence is kept per (worker, thread, path of names). With a split (the injection time),
  events before it are the healthy history: a path *persists* when it is anomalous in clearly
  more units after the split than its own rate before it allows (binomial margin
  ``persistence_z``) and in at least ``min_units``. The case is anomalous when a path persists;
  components are ranked by the evidence of their persistent paths (score after the split minus
  the path's own background, scaled to the same number of units). Without a split: a path
  persists when anomalous in at least ``min_units`` units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from detectors.outpost.ttad import Scores
from detectors.outpost.ttc import Forest

COLLECTIVE = re.compile(
    r"all_?reduce|all_?gather|reduce_?scatter|all_?to_?all|broadcast|barrier|nccl|gloo|c10d|rccl"
    r"|synchroni[sz]e|wait",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class LocalizeConfig:
    min_units: int = 3
    persistence_z: float = 3.0  # anomalous units after the split vs the worker's own rate before it
    collective_weight: float = 0.25
    score_cap: float = 50.0
    max_events: int = 500  # localized events reported in detail (all are counted)


@dataclass(frozen=True)
class ThreadRank:
    worker: int  # index into table.workers
    thread: int  # index into table.threads
    score: float
    events: int
    units: int


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
    coll = np.array([bool(COLLECTIVE.search(n)) for n in forest.base_names], dtype=bool)
    return coll[forest.base_name[rows]]


def waits_inside(forest: Forest) -> np.ndarray:
    """Events with a collective child: their excess may be the child's wait."""
    all_rows = np.arange(forest.parent.shape[0])
    coll = is_collective(forest, all_rows) & (forest.parent >= 0)
    out = np.zeros(all_rows.shape[0], dtype=bool)
    out[forest.parent[coll]] = True
    return out


def victims(forest: Forest, rows: np.ndarray, coll: np.ndarray) -> np.ndarray:
    """Collective anomalies in a step where another worker has a non-collective anomaly: waiting
    for the slow worker, not a cause. Steps with only collective anomalies keep them (network)."""
    step = forest.step[rows]
    worker = forest.table.worker[rows]
    causes = pd.DataFrame({"step": step[~coll & (step >= 0)], "worker": worker[~coll & (step >= 0)]})
    if causes.empty:
        return np.zeros(rows.shape[0], dtype=bool)
    per_step = causes.groupby("step")["worker"].agg(["nunique", "min"])
    cand = coll & np.isin(step, per_step.index.to_numpy())
    out = np.zeros(rows.shape[0], dtype=bool)
    if cand.any():
        info = per_step.reindex(step[cand])
        only_self = (info["nunique"].to_numpy() == 1) & (info["min"].to_numpy() == worker[cand])
        out[cand] = ~only_self
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
    post = np.ones(first.shape[0], dtype=bool) if split_us is None else t.ts[roots[first]] >= split_us
    w = t.worker[roots[first]]
    return (np.bincount(w[~post], minlength=n_workers).astype(float),
            np.bincount(w[post], minlength=n_workers).astype(float))


def _paths(df: pd.DataFrame, pre_units: np.ndarray, post_units: np.ndarray, cfg: LocalizeConfig,
           has_history: bool) -> pd.DataFrame:
    """Per (worker, thread, path): evidence after the split, its own background before it, and
    whether it persists (anomalous in clearly more units than its background rate allows)."""
    keys = ["worker", "thread", "path"]
    post = df[df["post"]].groupby(keys).agg(score=("s", "sum"), events=("s", "size"), units=("unit", "nunique"))
    pre = df[~df["post"]].groupby(keys).agg(bg_score=("s", "sum"), bg_units=("unit", "nunique"))
    agg = post.join(pre, how="left").fillna({"bg_score": 0.0, "bg_units": 0.0})
    w = agg.index.get_level_values("worker").to_numpy()
    n1, n0 = post_units[w], pre_units[w]
    k1, k0 = agg["units"].to_numpy(dtype=float), agg["bg_units"].to_numpy()
    agg["excess"] = agg["score"] - agg["bg_score"] * n1 / np.maximum(n0, 1.0)
    persists = k1 >= cfg.min_units
    if has_history:
        p0 = (k0 + 1.0) / (n0 + 2.0)
        persists &= k1 >= n1 * p0 + cfg.persistence_z * np.sqrt(n1 * p0 * (1 - p0)) + 1
    agg["persists"] = persists
    return agg


def localize(forest: Forest, scores: Scores, anom: np.ndarray, cfg: LocalizeConfig,
             split_us: float | None = None) -> Localization:
    rows = deepest(forest, anom)
    coll = is_collective(forest, rows)
    keep = ~victims(forest, rows, coll | waits_inside(forest)[rows])
    rows, coll = rows[keep], coll[keep]
    t = forest.table
    s = np.minimum(scores.score[rows], cfg.score_cap) * np.where(coll, cfg.collective_weight, 1.0)
    post = np.ones(rows.shape[0], dtype=bool) if split_us is None else t.ts[rows] >= split_us
    df = pd.DataFrame({"worker": t.worker[rows], "thread": t.thread[rows], "path": forest.path[rows], "s": s,
                       "post": post, "unit": units_of(forest, rows)})
    pre_u, post_u = _unit_totals(forest, split_us)
    paths = _paths(df, pre_u, post_u, cfg, split_us is not None)
    persistent = paths[paths["persists"]]
    per = persistent.groupby(["worker", "thread"]).agg(score=("excess", "sum"), events=("events", "sum"),
                                                      units=("units", "max"))
    per = per[per["score"] > 0].sort_values("score", ascending=False, kind="stable")
    ranking = tuple(ThreadRank(int(w), int(th), float(r.score), int(r.events), int(r.units))
                    for (w, th), r in per.iterrows())
    flagged = tuple(sorted({int(w) for w in persistent.index.get_level_values("worker")}))
    rows, s = rows[post], s[post]  # before the split is the healthy history: its anomalies are noise
    rows = rows[np.argsort(-s, kind="stable")]
    on_flagged = np.isin(t.worker[rows], flagged)
    first = float(t.ts[rows[on_flagged]].min()) if on_flagged.any() else None
    return Localization(bool(flagged), rows, ranking, flagged, first, int(anom.sum()))
