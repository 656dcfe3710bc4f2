"""Nesting of one trace's intervals into trees, thread by thread (the part of TTC that needs no other file).

Per thread, events sorted by start (longer first on ties) nest by counting: the depth of event i is the
number of intervals still open at its start, and its parent is the last earlier event one level up. This is
exact for properly nested intervals. Partial overlaps (a child running past its parent's end, common with
``with_stack`` python frames) are resolved by clipping the child's end to the parent's end for tree building
only, then recounting; a few rounds converge (each round fixes one level of a cascade).

The readers nest each file in its own process (threads never span files); ``ttc.build`` nests what they did not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ROUNDS = 64
_EPS_US = 1e-3  # zero-length events still nest inside their parent


@dataclass(frozen=True)
class Nesting:
    """Tree links of rows in (thread, ts, -dur, name) order."""

    parent: np.ndarray  # int64 row index, -1 for roots
    depth: np.ndarray  # int32
    rounds: int  # clipping rounds needed (0 = properly nested input)


def nest(thread: np.ndarray, ts: np.ndarray, dur: np.ndarray) -> Nesting:
    """Trees of every thread; rows must be in ``importers.sort_order``."""
    n = ts.shape[0]
    parent = np.full(n, -1, dtype=np.int64)
    depth = np.zeros(n, dtype=np.int32)
    bounds = np.r_[0, np.flatnonzero(np.diff(thread)) + 1, n]
    rounds = 0
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        d, p, r = _nest_thread(ts[a:b] - ts[a], dur[a:b])
        depth[a:b] = d
        parent[a:b] = np.where(p >= 0, p + a, -1)
        rounds = max(rounds, r)
    depth = np.where(parent < 0, 0, depth).astype(np.int32)
    return Nesting(parent, _fix_depth(parent, depth), rounds)


def _nest_thread(t: np.ndarray, dur: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Depth and local parent for one thread (t relative, sorted by t asc, dur desc)."""
    n = t.shape[0]
    idx = np.arange(n)
    end = t + np.maximum(dur, _EPS_US)
    for rounds in range(MAX_ROUNDS):
        depth = idx - np.searchsorted(np.sort(end), t, side="right")
        depth = np.maximum(depth, 0)
        parent = _parents(depth)
        has = parent >= 0
        p = parent[has]
        over = (end[has] > end[p]) & (end[p] > t[has])
        if not over.any():
            break
        rows = np.flatnonzero(has)[over]
        end[rows] = end[p[over]]
    closed = has.copy()
    closed[has] = end[parent[has]] <= t[has]  # still mis-parented after MAX_ROUNDS: make roots
    parent[closed] = -1
    return depth.astype(np.int32), parent, rounds


def by_depth(depth: np.ndarray) -> np.ndarray:
    """Rows ordered by depth, stable (a radix sort when depths fit in 16 bits)."""
    small = depth.max(initial=0) < 65536
    return np.argsort(depth.astype(np.uint16) if small else depth, kind="stable")


def _parents(depth: np.ndarray) -> np.ndarray:
    """Parent = the last earlier event whose depth is one less."""
    n = depth.shape[0]
    idx = np.arange(n, dtype=np.int64)
    order = by_depth(depth)
    keys = depth[order].astype(np.int64) * n + order  # sorted without a comparison sort
    q = (depth.astype(np.int64) - 1) * n + idx
    pos = np.searchsorted(keys, q) - 1
    parent = np.full(n, -1, dtype=np.int64)
    ok = (depth > 0) & (pos >= 0)
    cand = keys[np.maximum(pos, 0)]
    ok &= cand // n == depth - 1
    parent[ok] = cand[ok] % n
    return parent


def _fix_depth(parent: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Depth = parent's depth + 1 (events re-rooted after clipping shift their subtree up)."""
    if not (depth[parent[parent >= 0]] + 1 != depth[parent >= 0]).any():
        return depth
    depth = np.zeros_like(depth)
    frontier = np.flatnonzero(parent < 0)
    level = 0
    while frontier.size:
        depth[frontier] = level
        frontier = np.flatnonzero(np.isin(parent, frontier))
        level += 1
    return depth
