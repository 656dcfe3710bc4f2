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
- The case is anomalous when some worker has localized anomalies in at least ``min_units``
  distinct units (a step when the trace has steps, else a root event): one preempted op is
  noise, a fault persists.
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


def localize(forest: Forest, scores: Scores, anom: np.ndarray, cfg: LocalizeConfig) -> Localization:
    rows = deepest(forest, anom)
    coll = is_collective(forest, rows)
    keep = ~victims(forest, rows, coll | waits_inside(forest)[rows])
    rows, coll = rows[keep], coll[keep]
    t = forest.table
    s = np.minimum(scores.score[rows], cfg.score_cap) * np.where(coll, cfg.collective_weight, 1.0)
    rows = rows[np.argsort(-s, kind="stable")]
    s = np.sort(s)[::-1]
    df = pd.DataFrame({"worker": t.worker[rows], "thread": t.thread[rows], "s": s,
                       "unit": units_of(forest, rows)})
    per = df.groupby(["worker", "thread"]).agg(score=("s", "sum"), events=("s", "size"), units=("unit", "nunique"))
    per = per.sort_values("score", ascending=False, kind="stable")
    ranking = tuple(ThreadRank(int(w), int(th), float(r.score), int(r.events), int(r.units))
                    for (w, th), r in per.iterrows())
    units = df.groupby("worker")["unit"].nunique()
    flagged = tuple(int(w) for w in units.index[units.to_numpy() >= cfg.min_units])
    on_flagged = np.isin(t.worker[rows], flagged)
    first = float(t.ts[rows[on_flagged]].min()) if on_flagged.any() else None
    return Localization(bool(flagged), rows, ranking, flagged, first, int(anom.sum()))
