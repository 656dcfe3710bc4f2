"""TTC: trace-tree construction from nested intervals, vectorised.

Per (worker, thread), events nest into trees (``nesting``: the readers nest each file in its own
process). Durations used by TTAD stay the recorded ones. Each node also gets its self
(exclusive) time, what TTAD scores.

Each node is labelled with depth, parent, structural role (root/inner/leaf), a 64-bit id of
the path of ancestor names (``ProfilerStep#7`` counts as ``ProfilerStep``), its step (own
``args.step`` or ``#N`` suffix, else inherited from the ancestors, else the step whose
interval contains it on the same worker; a trace without step markers uses the successive
occurrences of its longest-running root name as steps), its root ancestor (a rank's other
workers such as GPU streams use its steps too), and its occurrence index among
events of the same worker, step and path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from chaosbench.detectors.outpost.importers import EventTable, in_order, name_ranks, sort_order
from chaosbench.detectors.outpost.nesting import by_depth, nest

ROOT, INNER, LEAF = 0, 1, 2
ROLES = ("root", "inner", "leaf")
_STEP_SUFFIX = re.compile(r"#(\d+)$")
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)


@dataclass(frozen=True)
class Forest:
    """The event table sorted by (thread, ts, -dur), with tree labels; columns aligned."""

    table: EventTable  # columns already reordered
    parent: np.ndarray  # int64 row index, -1 for roots
    depth: np.ndarray  # int32
    role: np.ndarray  # int8: ROOT, INNER, LEAF
    path: np.ndarray  # uint64 id of the ancestor-name path (own name included)
    base_name: np.ndarray  # int32: name id with '#N' suffix removed (index into base_names)
    base_names: tuple[str, ...]
    step: np.ndarray  # int64, -1 when unknown
    root: np.ndarray  # int64 row of the root ancestor
    occ: np.ndarray  # int32 occurrence among (worker, step, path)
    rounds: int  # clipping rounds needed (0 = properly nested input)
    self_dur: np.ndarray | None = None  # float64 us: duration minus the time covered by children
    aggregate: np.ndarray | None = None  # bool: a derived busy-time event (waits.with_busy), not a recorded one
    thread_class: np.ndarray | None = None  # uint64 per thread: id of the set of names it runs (waits)
    wait: np.ndarray | None = None  # bool per row: a wait (waits.waits), kept by waits.with_busy

    def path_text(self, row: int) -> str:
        names = []
        while row >= 0:
            names.append(self.base_names[self.base_name[row]])
            row = int(self.parent[row])
        return " > ".join(reversed(names))


def _mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = (a ^ (b.astype(np.uint64) + _M1)) * _M2
        return h ^ (h >> np.uint64(31))


def _sorted(table: EventTable) -> EventTable:
    if table.nesting is not None:  # read_traces sorted and nested these rows
        return table
    rank = name_ranks(table.names)[table.name]
    if in_order(table.thread, table.ts, table.dur, rank):
        return table
    order = sort_order(table.thread, table.ts, table.dur, rank)
    cols = {k: getattr(table, k)[order] for k in ("worker", "thread", "name", "ts", "dur", "step")}
    return EventTable(**cols, names=table.names, workers=table.workers, threads=table.threads)


def _base_names(names: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """Name id -> base-name id (``#N`` stripped), and the step number carried by the suffix (-1)."""
    base, steps = [], []
    for name in names:
        m = _STEP_SUFFIX.search(name)
        base.append(name[: m.start()] if m else name)
        steps.append(int(m.group(1)) if m else -1)
    codes, uniques = pd.factorize(pd.Series(base, dtype=object))
    return codes.astype(np.int32), tuple(str(u) for u in uniques), np.array(steps, dtype=np.int64)


def _levels(depth: np.ndarray) -> list[np.ndarray]:
    order = by_depth(depth)
    bounds = np.searchsorted(depth[order], np.arange(int(depth.max()) + 2))
    return [order[bounds[d] : bounds[d + 1]] for d in range(len(bounds) - 1)]


def _top_down(levels: list[np.ndarray], parent: np.ndarray, base: np.ndarray, step: np.ndarray):
    path = np.zeros(parent.shape[0], dtype=np.uint64)
    root = np.arange(parent.shape[0], dtype=np.int64)
    for d, rows in enumerate(levels):
        if d == 0:
            path[rows] = _mix(np.zeros(rows.shape[0], dtype=np.uint64), base[rows])
            continue
        p = parent[rows]
        path[rows] = _mix(path[p], base[rows])
        root[rows] = root[p]
        inherit = step[rows] < 0
        step[rows[inherit]] = step[p[inherit]]
    return path, root


def _implicit_steps(table: EventTable, step: np.ndarray, parent: np.ndarray, base: np.ndarray) -> None:
    """A component without any step marker takes as steps the successive occurrences of the root
    name that covers the most time (e.g. each ``engine.step`` or training iteration)."""
    comp = pd.factorize(pd.Series([w.component for w in table.workers], dtype=object))[0][table.worker]
    roots = parent < 0
    for c in np.unique(comp):
        r = np.flatnonzero(roots & (comp == c))
        if r.size == 0 or (step[r] >= 0).any():
            continue
        total = pd.Series(table.dur[r]).groupby(base[r]).agg(["sum", "size"])
        total = total[total["size"] >= 2]
        if total.empty:
            continue
        top = r[base[r] == total["sum"].idxmax()]
        for w in np.unique(table.worker[top]):  # occurrence index per worker, in time order
            rows = top[table.worker[top] == w]
            step[rows[np.argsort(table.ts[rows], kind="stable")]] = np.arange(rows.shape[0])


def _steps_by_time(table: EventTable, step: np.ndarray, parent: np.ndarray) -> None:
    """Events with no step inherit the step whose root interval contains their start, on the same
    component (a rank's GPU streams and comm threads follow its main thread's steps)."""
    roots = (parent < 0) & (step >= 0)
    missing = step < 0
    if not roots.any() or not missing.any():
        return
    comp_of_worker = pd.factorize(pd.Series([w.component for w in table.workers], dtype=object))[0]
    comp = comp_of_worker[table.worker]
    for c in np.unique(comp[missing]):
        r = np.flatnonzero(roots & (comp == c))
        if r.size == 0:
            continue
        r = r[np.argsort(table.ts[r], kind="stable")]
        q = np.flatnonzero(missing & (comp == c))
        pos = np.searchsorted(table.ts[r], table.ts[q], side="right") - 1
        ok = pos >= 0
        inside = ok.copy()
        inside[ok] = table.ts[q[ok]] < table.ts[r[pos[ok]]] + table.dur[r[pos[ok]]]
        step[q[inside]] = step[r[pos[inside]]]


def _occurrence(thread: np.ndarray, step: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Occurrence index of each row among the earlier rows of the same (thread, step, path).

    Rows are in (thread, ts) order, so the rank of a row in its group is its rank by row index. The
    group and the row index are packed into one 64-bit integer and sorted by value (a plain sort is
    several times faster than an argsort on millions of rows), then split again."""
    n = path.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    path_code, paths = pd.factorize(path)
    s1 = (step + 1).astype(np.uint64)
    n_steps, n_threads = int(s1.max()) + 1, int(thread.max()) + 1
    row_bits = max(int(n - 1).bit_length(), 1)
    if (n_threads * n_steps * len(paths) - 1).bit_length() + row_bits <= 64:
        group = (thread.astype(np.uint64) * np.uint64(n_steps) + s1) * np.uint64(len(paths))
        group += path_code.astype(np.uint64)
    else:  # too many groups to pack: number them densely
        group = pd.factorize(pd.MultiIndex.from_arrays([thread, s1, path_code]))[0].astype(np.uint64)
    packed = np.sort((group << np.uint64(row_bits)) | np.arange(n, dtype=np.uint64))
    order = (packed & np.uint64((1 << row_bits) - 1)).astype(np.int64)
    g = packed >> np.uint64(row_bits)
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, n]))
    occ = np.empty(n, dtype=np.int32)
    occ[order] = np.arange(n) - first
    return occ


def build(table: EventTable) -> Forest:
    """Trees for every (worker, thread) of ``table``."""
    tab = _sorted(table)
    n = len(tab)
    nesting = nest(tab.thread, tab.ts, tab.dur) if tab.nesting is None else tab.nesting
    parent, depth = nesting.parent, nesting.depth
    base_of, base_names, suffix_step = _base_names(tab.names)
    base = base_of[tab.name]
    step = np.where(tab.step >= 0, tab.step, suffix_step[tab.name])
    levels = _levels(depth)
    _implicit_steps(tab, step, parent, base)
    path, root = _top_down(levels, parent, base, step)
    _steps_by_time(tab, step, parent)
    role = np.full(n, LEAF, dtype=np.int8)
    role[parent[parent >= 0]] = INNER
    role[parent < 0] = ROOT
    occ = _occurrence(tab.thread, step, path)  # per thread: two streams of a worker interleave by chance
    return Forest(tab, parent, depth, role, path, base, base_names, step, root, occ, nesting.rounds,
                  self_time(tab.ts, tab.dur, parent))


def self_time(ts: np.ndarray, dur: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """Exclusive duration: an event's duration minus the part of it its children cover (children are
    clipped to the parent's interval; never below 0). A parent that only waits for its children
    (``attention`` around an ``allreduce``) keeps its own work, which is what a slowed worker stretches."""
    has = parent >= 0
    c, p = np.flatnonzero(has), parent[has]
    covered = np.minimum(ts[c] + dur[c], ts[p] + dur[p]) - np.maximum(ts[c], ts[p])
    child = np.bincount(p, weights=np.maximum(covered, 0.0), minlength=ts.shape[0])
    return np.maximum(dur - child, 0.0)
