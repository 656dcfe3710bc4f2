"""Waits and compute: which events wait for another worker, and each compute thread's busy time.

A wait is an event of communication or synchronisation: its name says so (all-reduce, all-gather,
reduce-scatter, all-to-all, broadcast, send/recv, barrier, NCCL/gloo/c10d, synchronize, wait), or it
runs on a communication thread or stream: one whose name says so (``pt_gloo_runloop``), or at least half
of whose events are waits by name (a GPU's NCCL stream, whose number differs on every rank). A wait
lasts as long as the slowest peer makes it: it is a victim of the compute of the worker it waits for.

Busy time: per (worker, compute thread, step), the summed self time of the thread's compute events
(not waits, not container roots such as ``ProfilerStep``). A stream slowed by 10-20 % on every kernel is
below any per-event threshold (the noise floor of one kernel is ~5 %), while its waiting peers' waits
grow by the whole slowdown; its busy time per step moves by the same slowdown with the noise of a sum.
One aggregate event per (worker, thread, step) is appended to the forest (a root without children,
``ts`` = the step's first compute event on the thread, ``dur`` = the busy time). It is named after the
thread's role, its most frequent compute event, and class (``busy: <name> [<class>]``), so that threads match
across workers by role, never by thread id; TTAD scores these events like any other, with a finer
noise floor (``TTADConfig.busy_rel_scale``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

import numpy as np
import pandas as pd

from chaosbench.detectors.outpost.importers import EventTable
from chaosbench.detectors.outpost.ttc import ROOT, Forest, _mix

WAIT = re.compile(
    r"all_?reduce|all_?gather|reduce_?scatter|all_?to_?all|broadcast|barrier|nccl|gloo|c10d|rccl"
    r"|synchroni[sz]e|wait|(?<![a-z])i?(?:send|recv)|(?:send|recv)(?![a-z])|p2p",
    re.IGNORECASE,
)
BUSY_PREFIX = "busy: "
CLASS_MIN = 3  # a name counts in a thread's class when it runs at least this often there
COMM_SHARE = 0.5  # a thread with at least this share of waits (by count) is a communication thread


def comm_threads(table: EventTable, wait_name: np.ndarray) -> np.ndarray:
    """Per thread: a communication thread or stream (by its name, or by what it runs)."""
    n = len(table.threads)
    named = np.array([bool(WAIT.search(th[2])) for th in table.threads], dtype=bool)
    count = np.bincount(table.thread, minlength=n)
    waits = np.bincount(table.thread, weights=wait_name.astype(float), minlength=n)
    return named | ((count > 0) & (waits >= COMM_SHARE * count))


def waits(forest: Forest) -> np.ndarray:
    """Per row: a wait (by its name, or because it runs on a communication thread)."""
    by_base = np.array([bool(WAIT.search(n)) for n in forest.base_names], dtype=bool)
    wait_name = by_base[forest.base_name]
    return wait_name | comm_threads(forest.table, wait_name)[forest.table.thread]


def thread_classes(table: EventTable, p_thread: np.ndarray, p_base: np.ndarray, count: np.ndarray,
                   base_names: tuple[str, ...]) -> np.ndarray:
    """Per thread, a 64-bit id of what it runs and of what its component (rank) runs: the sets of event
    names seen at least ``CLASS_MIN`` times (one-off events do not split a class). Threads with the same
    id are peers: the same stage of a pipeline on every replica, every tensor-parallel rank; the first
    and last stages (embedding, head, loss) and their communication streams form their own classes."""
    keep = count >= CLASS_MIN
    comp = pd.factorize(pd.Series([w.component for w in table.workers], dtype=object))[0]
    comp_of_thread = comp[np.array([th[0] for th in table.threads], dtype=np.int64)]

    def digest(owner: np.ndarray, n: int) -> list[bytes]:
        out = [b""] * n
        for o, group in pd.Series(p_base[keep]).groupby(owner[keep]):
            text = "\n".join(sorted({base_names[b] for b in group.tolist()})).encode()
            out[int(o)] = hashlib.blake2b(text, digest_size=8).digest()
        return out

    own = digest(p_thread, len(table.threads))
    of_comp = digest(comp_of_thread[p_thread], int(comp.max()) + 1 if comp.size else 0)
    return np.array([int.from_bytes(hashlib.blake2b(own[th] + of_comp[comp_of_thread[th]], digest_size=8).digest(),
                                    "little") for th in range(len(table.threads))], dtype=np.uint64)


def _codes(values: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes of non-negative int64 ``values`` (< ``bound``) and the values they stand for: a
    bincount when the range is small (much cheaper than hashing millions of rows), else a factorize."""
    if bound <= 1 << 24:
        present = np.flatnonzero(np.bincount(values, minlength=bound))
        lookup = np.zeros(bound, dtype=np.int64)
        lookup[present] = np.arange(present.shape[0])
        return lookup[values], present
    codes, uniques = pd.factorize(values)
    return codes, np.asarray(uniques, dtype=np.int64)


def with_busy(forest: Forest) -> Forest:
    """The forest plus one busy-time event per (worker, compute thread, step); ``forest.aggregate``
    marks them, and ``forest.thread_class`` gives each thread's class when classes separate threads
    that run events of the same name (else None). Unchanged when no compute event has a step."""
    t = forest.table
    n = len(t)
    has_child = np.zeros(n, dtype=bool)
    has_child[forest.parent[forest.parent >= 0]] = True
    own = forest.table.dur if forest.self_dur is None else forest.self_dur
    wait = waits(forest)
    sel = np.flatnonzero(~wait & ~((forest.parent < 0) & has_child) & (forest.step >= 0))
    if sel.size == 0:
        return replace(forest, wait=wait)
    nb = len(forest.base_names)
    # per (thread, base name): how often it runs, and its compute self time
    pair, pairs = _codes(t.thread.astype(np.int64) * nb + forest.base_name, len(t.threads) * nb)
    count = np.bincount(pair, minlength=pairs.shape[0])
    runs = np.bincount(pair[sel], minlength=pairs.shape[0])
    p_thread, p_base = pairs // nb, pairs % nb
    classes = thread_classes(t, p_thread, p_base, count, forest.base_names)
    # each thread's role: its most frequent compute event (counts are structural, durations are noisy:
    # peers must agree), ties to the same name everywhere
    order = np.lexsort((p_base, -runs, p_thread))
    first = np.r_[True, p_thread[order][1:] != p_thread[order][:-1]] & (runs[order] > 0)
    role_of = dict(zip(p_thread[order][first].tolist(), p_base[order][first].tolist()))
    # classes matter to TTAD only when an event name runs on threads of different classes
    shared = pd.Series(classes[p_thread]).groupby(p_base).nunique()
    refines = bool((shared > 1).any())
    thread = t.thread[sel].astype(np.int64)
    # one event per (thread, step)
    span = int(forest.step.max()) + 2
    key, keys = _codes(thread * span + forest.step[sel], len(t.threads) * span)
    busy = np.bincount(key, weights=own[sel], minlength=keys.shape[0])
    first_row = np.empty(keys.shape[0], dtype=np.int64)
    first_row[key[::-1]] = np.arange(key.shape[0] - 1, -1, -1)  # rows are in (thread, ts) order
    start = t.ts[sel][first_row]
    b_thread = keys // span
    b_step = keys % span
    # names: one "busy: <role> [<class>]" per (role, thread class), appended to names and base names
    label = {th: f"{BUSY_PREFIX}{forest.base_names[role_of[th]] if th in role_of else 'compute'}"
                 f" [{int(classes[th]) & 0xFFFFFF:06x}]"
             for th in set(b_thread.tolist())}
    labels = sorted(set(label.values()))
    names, base_names = list(t.names), list(forest.base_names)
    name_id = {x: len(names) + i for i, x in enumerate(labels)}
    base_id = {x: len(base_names) + i for i, x in enumerate(labels)}
    names += labels
    base_names += labels
    b_name = np.array([name_id[label[th]] for th in b_thread.tolist()], dtype=t.name.dtype)
    b_base = np.array([base_id[label[th]] for th in b_thread.tolist()], dtype=forest.base_name.dtype)
    m = keys.shape[0]
    b_worker = np.array([t.threads[th][0] for th in b_thread.tolist()], dtype=t.worker.dtype)
    path = _mix(np.zeros(m, dtype=np.uint64), b_base)
    # occurrence among (worker, step, path): a worker with two threads of the same role
    occ = pd.Series(np.zeros(m)).groupby([b_worker, b_step, path]).cumcount().to_numpy(dtype=np.int32)
    table = EventTable(
        worker=np.r_[t.worker, b_worker], thread=np.r_[t.thread, b_thread.astype(t.thread.dtype)],
        name=np.r_[t.name, b_name], ts=np.r_[t.ts, start], dur=np.r_[t.dur, busy],
        step=np.r_[t.step, b_step], names=tuple(names), workers=t.workers, threads=t.threads)
    aggregate = np.r_[np.zeros(n, dtype=bool) if forest.aggregate is None else forest.aggregate,
                      np.ones(m, dtype=bool)]
    return replace(
        forest, table=table, parent=np.r_[forest.parent, np.full(m, -1, dtype=forest.parent.dtype)],
        depth=np.r_[forest.depth, np.zeros(m, dtype=forest.depth.dtype)],
        role=np.r_[forest.role, np.full(m, ROOT, dtype=forest.role.dtype)], path=np.r_[forest.path, path],
        base_name=np.r_[forest.base_name, b_base], base_names=tuple(base_names),
        step=np.r_[forest.step, b_step], root=np.r_[forest.root, np.arange(n, n + m, dtype=forest.root.dtype)],
        occ=np.r_[forest.occ, occ], self_dur=np.r_[own, busy], aggregate=aggregate, wait=np.r_[wait, np.zeros(m, bool)],
        thread_class=classes if refines else None)
