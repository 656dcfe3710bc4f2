"""Kineto / Chrome trace readers -> one columnar event table.

Accepted input: a file or a directory of files (``*.json``, ``*.json.gz``, ``*.pt.trace.json[.gz]``),
each a dict with ``traceEvents`` or a bare list of events, gzip or not (detected by magic
bytes). ``ts``/``dur`` are microseconds (floats keep fractional nanoseconds up to float64
resolution). Complete events (``ph: X``) become intervals; ``B``/``E`` pairs are matched per
thread (an unmatched ``B`` is closed at the thread's last timestamp); metadata
(``process_name``, ``thread_name``) is kept; other phases (instants, counters, flows) are
dropped. Names are interned to integer ids (as HTA's symbol table).

The hot path is msgspec's typed decoder (unknown fields and most ``args`` skipped in C) and
column extraction through ``map``/``attrgetter`` into numpy: no per-event Python bytecode.
"""

from __future__ import annotations

import gzip
import multiprocessing
import os
import re
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import compress, repeat
from operator import attrgetter, not_
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from chaosbench.detectors.outpost.heap import reuse_freed_memory
from chaosbench.detectors.outpost.nesting import Nesting, nest
from chaosbench.errors import TraceInvalid

WORKER_KEYS = ("pid", "tid", "cat", "file")
TRACE_SUFFIXES = (".json", ".json.gz")
PARALLEL_MIN_BYTES = 8 << 20  # below this, one process (a pool costs more than it saves)
_RANK_RE = re.compile(r"rank[-_]?(\d+)", re.IGNORECASE)


class _Args(msgspec.Struct, gc=False):
    step: Any = None
    name: Any = None


class _Event(msgspec.Struct, gc=False):
    ph: str = ""
    name: Any = ""
    ts: float | None = None
    dur: float | None = None
    pid: int | str = 0
    tid: int | str = 0
    args: _Args | None = None


class _EventCat(_Event, gc=False):
    cat: Any = ""  # decoded only when it is the worker key (skipping it is cheaper)


class _Doc(msgspec.Struct, gc=False):
    traceEvents: list[_Event]


class _DocCat(msgspec.Struct, gc=False):
    traceEvents: list[_EventCat]


_DECODERS = {False: msgspec.json.Decoder(_Doc | list[_Event]), True: msgspec.json.Decoder(_DocCat | list[_EventCat])}


@dataclass(frozen=True)
class WorkerInfo:
    file: str
    key: str  # raw value of the worker key, as a string
    name: str  # process_name metadata, or "<file stem>:<key>"
    component: str  # rank-<i> when the trace says so, else ``name``


@dataclass(frozen=True)
class EventTable:
    """Interval events, one row each (numpy columns of equal length).

    worker: index into ``workers``; thread: index into ``threads`` ((worker, raw tid, thread name));
    name: index into ``names``; ts/dur: microseconds; step: int64, -1 when unknown.
    nesting: the trees of these rows, set by ``read_traces`` (which returns rows in ``sort_order``).
    """

    worker: np.ndarray
    thread: np.ndarray
    name: np.ndarray
    ts: np.ndarray
    dur: np.ndarray
    step: np.ndarray
    names: tuple[str, ...]
    workers: tuple[WorkerInfo, ...]
    threads: tuple[tuple[int, str, str], ...]
    nesting: Nesting | None = None

    def __len__(self) -> int:
        return int(self.ts.shape[0])


def trace_paths(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise TraceInvalid(f"{path}: no such file or directory")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(TRACE_SUFFIXES))
    if not files:
        raise TraceInvalid(f"{path}: no trace files (*.json, *.json.gz)")
    return files


def read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise TraceInvalid(f"{path}: corrupt or truncated gzip ({exc})") from exc
    if not data.strip():
        raise TraceInvalid(f"{path}: empty file")
    return data


def decode_events(path: Path, data: bytes, with_cat: bool = False) -> list[_Event]:
    try:
        doc = _DECODERS[with_cat].decode(data)
    except msgspec.ValidationError as exc:
        raise TraceInvalid(f"{path}: not a Chrome trace ({exc})") from exc
    except msgspec.DecodeError as exc:
        raise TraceInvalid(f"{path}: invalid JSON ({exc})") from exc
    events = doc.traceEvents if isinstance(doc, (_Doc, _DocCat)) else doc
    if not events:
        raise TraceInvalid(f"{path}: no trace events")
    return events


def _col(events: list, attr: str) -> list:
    return list(map(attrgetter(attr), events))


def _metadata(events: list[_Event]) -> tuple[dict, dict]:
    procs: dict[str, str] = {}
    threads: dict[tuple[str, str], str] = {}
    for ev in events:
        if ev.ph == "M" and ev.args is not None and isinstance(ev.args.name, str):
            if ev.name == "process_name":
                procs[str(ev.pid)] = ev.args.name
            elif ev.name == "thread_name":
                threads[(str(ev.pid), str(ev.tid))] = ev.args.name
    return procs, threads


def _begin_end(events: list[_Event], path: Path, last: dict[tuple, float]) -> list[_Event]:
    """Turn B/E pairs into X events, per (pid, tid) stack; an unmatched B closes at the thread's
    last timestamp (``last``: latest end seen per thread among complete events)."""
    out: list[_Event] = []
    stacks: dict[tuple, list[_Event]] = {}
    last = dict(last)
    for ev in events:  # only B/E events: rare in Kineto output, so a plain loop
        if ev.ts is None:
            raise TraceInvalid(f"{path}: a B/E event has no 'ts'")
        key = (ev.pid, ev.tid)
        last[key] = max(last.get(key, ev.ts), ev.ts)
        if ev.ph == "B":
            stacks.setdefault(key, []).append(ev)
        elif stacks.get(key):
            b = stacks[key].pop()
            out.append(msgspec.structs.replace(b, ph="X", dur=ev.ts - b.ts))
    for key, stack in stacks.items():
        out.extend(msgspec.structs.replace(b, ph="X", dur=last[key] - b.ts) for b in stack)
    return out


def _thread_ends(events: list[_Event]) -> dict[tuple, float]:
    ends: dict[tuple, float] = {}
    for ev in events:  # only called when the trace has B/E events
        if ev.ts is not None and ev.dur is not None:
            key = (ev.pid, ev.tid)
            ends[key] = max(ends.get(key, ev.ts + ev.dur), ev.ts + ev.dur)
    return ends


def _steps(events: list[_Event]) -> np.ndarray:
    """args.step when it is a whole number, else -1."""
    args = _col(events, "args")
    has_list = list(map(bool, args))
    has = np.array(has_list, dtype=bool)
    step = np.full(len(events), -1, dtype=np.int64)
    if has.any():
        vals = pd.to_numeric(pd.Series(list(map(attrgetter("step"), compress(args, has_list))), dtype=object),
                             errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.isfinite(vals) & (vals == np.round(vals))
        sub = np.full(vals.shape[0], -1, dtype=np.int64)
        sub[ok] = vals[ok].astype(np.int64)
        step[has] = sub
    return step


def component_of(process_name: str | None, file_stem: str, fallback: str) -> str:
    for text in (process_name, file_stem):
        m = _RANK_RE.search(text or "")
        if m:
            return f"rank-{int(m.group(1))}"
    return process_name or fallback


def stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".json", ".pt.trace"):
        name = name.removesuffix(suffix)
    return name


@dataclass(frozen=True)
class _FileColumns:
    path: Path
    key: np.ndarray  # worker-key codes into key_values
    key_values: list[str]
    thread: np.ndarray  # codes into threads
    threads: list[tuple[int, str, str]]  # (worker-key code, pid, tid)
    pid_of_key: list[str]  # a pid for each key value (for process_name lookup)
    name: np.ndarray
    name_values: list[str]
    ts: np.ndarray
    dur: np.ndarray
    step: np.ndarray
    procs: dict[str, str]
    thread_names: dict[tuple[str, str], str]
    nesting: Nesting  # parents are rows of this file


def _codes(values) -> tuple[np.ndarray, list]:
    """Intern values (C-level dict ops): int32 codes + the distinct values in first-seen order."""
    ids = {v: i for i, v in enumerate(dict.fromkeys(values))}
    return np.fromiter(map(ids.__getitem__, values), np.int32, count=len(values)), list(ids)


def _field_codes(events: list[_Event], field: str) -> tuple[np.ndarray, list]:
    """Codes of an id field: one C pass + a hash factorize when every value is an int."""
    try:
        ints = np.fromiter(map(attrgetter(field), events), np.int64, count=len(events))
    except (TypeError, ValueError, OverflowError):
        return _codes(_col(events, field))
    codes, uniques = pd.factorize(ints)
    return codes.astype(np.int32), uniques.tolist()


def _floats(events: list[_Event], field: str, path: Path) -> np.ndarray:
    try:
        out = np.fromiter(map(attrgetter(field), events), np.float64, count=len(events))
    except (TypeError, ValueError) as exc:
        raise TraceInvalid(f"{path}: a duration event has no numeric '{field}'") from exc
    if not np.isfinite(out).all():
        raise TraceInvalid(f"{path}: a duration event has a non-finite '{field}'")
    return out


def _split_phases(events: list[_Event], path: Path) -> tuple[list[_Event], list[_Event]]:
    """(interval events, metadata events); B/E pairs become X events."""
    phases = _col(events, "ph")
    if phases.count("X") == len(phases):
        return events, []
    is_x = list(map("X".__eq__, phases))  # a list selector: compress on a numpy mask boxes every element
    out = list(compress(events, is_x))
    rest = list(compress(events, map(not_, is_x)))  # metadata, B/E, instants, flows: usually few
    meta = [ev for ev in rest if ev.ph == "M"]
    be = [ev for ev in rest if ev.ph in ("B", "E")]
    if be:
        out = out + _begin_end(be, path, _thread_ends(out))
    if not out:
        raise TraceInvalid(f"{path}: no duration events (ph X or B/E)")
    return out, meta


def name_ranks(names: list[str] | tuple[str, ...]) -> np.ndarray:
    """Each name id's rank among the names in string order (the same in every file)."""
    ranks = np.empty(len(names), dtype=np.int64)
    ranks[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names))
    return ranks


def sort_order(thread: np.ndarray, ts: np.ndarray, dur: np.ndarray, name_rank: np.ndarray) -> np.ndarray:
    """Order by (thread, ts, -dur, name): parents before children on equal starts, and events with the
    same start and duration (a wrapper and the op it wraps, rounded to the same microseconds) nested the
    same way on every worker and step; fully equal rows keep their order. One stable integer pass when
    each thread's events are already in time order (the usual case), then a lexsort of the tied runs."""
    key = thread.astype(np.uint16) if thread.max(initial=0) < 65536 else thread
    o = np.argsort(key, kind="stable")
    th, t = thread[o], ts[o]
    if not ((t[1:] >= t[:-1]) | (th[1:] != th[:-1])).all():
        o = np.argsort(ts, kind="stable")
        o = o[np.argsort(key[o], kind="stable")]
        th, t = thread[o], ts[o]
    same = (th[1:] == th[:-1]) & (t[1:] == t[:-1])
    if same.any():
        tie = np.zeros(o.shape[0], dtype=bool)
        tie[1:] |= same
        tie[:-1] |= same
        pos = np.flatnonzero(tie)
        run = np.cumsum(np.r_[True, ~same][pos])  # run id of each tied position
        o[pos] = o[pos][np.lexsort((name_rank[o[pos]], -dur[o[pos]], run))]
    return o


def in_order(thread: np.ndarray, ts: np.ndarray, dur: np.ndarray, name_rank: np.ndarray) -> bool:
    """Whether rows are already in ``sort_order``."""
    d_thread, d_ts, d_dur = np.diff(thread), np.diff(ts), np.diff(dur)
    tied = (d_thread == 0) & (d_ts == 0)
    ok = (d_thread > 0) | ((d_thread == 0) & (d_ts > 0)) | (tied & (d_dur < 0))
    return bool((ok | (tied & (d_dur == 0) & (np.diff(name_rank) >= 0))).all())


def read_file(path: Path, worker_key: str = "pid") -> _FileColumns:
    """Decode one trace file into columns (codes local to the file)."""
    events = decode_events(path, read_bytes(path), with_cat=worker_key == "cat")
    events, meta = _split_phases(events, path)
    procs, thread_names = _metadata(meta)
    ts, dur = _floats(events, "ts", path), _floats(events, "dur", path)
    if (dur < 0).any():
        raise TraceInvalid(f"{path}: {int((dur < 0).sum())} events have a negative 'dur'")
    pid_codes, pid_values = _field_codes(events, "pid")
    tid_codes, tid_raw = _field_codes(events, "tid")
    if worker_key == "file":
        key, key_values = np.zeros(len(events), dtype=np.int32), [stem(path)]
    elif worker_key == "pid":
        key, key_values = pid_codes, pid_values
    else:
        key, key_values = _codes(_col(events, worker_key))
    tid, uniq = pd.factorize(pid_codes.astype(np.int64) * len(tid_raw) + tid_codes)
    tid_values = [(str(pid_values[u // len(tid_raw)]), str(tid_raw[u % len(tid_raw)])) for u in uniq.tolist()]
    first = np.empty(len(key_values), dtype=np.int64)
    first[key[::-1]] = np.arange(len(key) - 1, -1, -1)  # the last write per code is its first index
    name, name_values = _codes(_col(events, "name"))
    names = [str(v) for v in name_values]
    thread, uniq = pd.factorize(key.astype(np.int64) * len(tid_values) + tid)  # a thread: (worker, pid, tid)
    threads = [(u // len(tid_values), *tid_values[u % len(tid_values)]) for u in uniq.tolist()]
    # rows sorted and nested here, in the reader processes: threads never span files
    order = sort_order(thread, ts, dur, name_ranks(names)[name])
    thread, ts, dur = thread.astype(np.int32)[order], ts[order], dur[order]
    with reuse_freed_memory():  # many same-sized temporaries, one thread after another
        nesting = nest(thread, ts, dur)
    return _FileColumns(path, key[order], [str(v) for v in key_values], thread, threads,
                        [str(pid_values[pid_codes[i]]) for i in first], name[order], names,
                        ts, dur, _steps(events)[order], procs, thread_names, nesting)


class _Interner:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def map(self, values: list[str]) -> np.ndarray:
        return np.array([self.ids.setdefault(v, len(self.ids)) for v in values], dtype=np.int32)

    def values(self) -> tuple[str, ...]:
        return tuple(self.ids)


def _assemble(files: list[_FileColumns]) -> EventTable:
    names = _Interner()
    workers: list[WorkerInfo] = []
    threads: list[tuple[int, str, str]] = []
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("worker", "thread", "name", "ts", "dur", "step", "parent",
                                                         "depth")}
    rows = 0
    for fc in files:
        w0 = len(workers)
        for k, value in enumerate(fc.key_values):
            proc = fc.procs.get(fc.pid_of_key[k])
            fallback = f"{stem(fc.path)}:{value}"
            component = component_of(proc, stem(fc.path), fallback)
            workers.append(WorkerInfo(str(fc.path), value, proc or fallback, component))
        cols["thread"].append(fc.thread + len(threads))
        threads += [(w0 + k, tid, fc.thread_names.get((pid, tid), tid)) for k, pid, tid in fc.threads]
        cols["worker"].append(fc.key + w0)
        cols["name"].append(names.map(fc.name_values)[fc.name])
        for k in ("ts", "dur", "step"):
            cols[k].append(getattr(fc, k))
        cols["parent"].append(np.where(fc.nesting.parent >= 0, fc.nesting.parent + rows, -1))
        cols["depth"].append(fc.nesting.depth)
        rows += fc.ts.shape[0]
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    nesting = Nesting(arrays.pop("parent"), arrays.pop("depth"), max(fc.nesting.rounds for fc in files))
    return EventTable(**arrays, names=names.values(), workers=tuple(workers), threads=tuple(threads), nesting=nesting)


def _read_all(paths: list[Path], worker_key: str, jobs: int) -> list[_FileColumns]:
    """Files in parallel processes when there are several large ones (columns pickle cheaply)."""
    big = sum(p.stat().st_size for p in paths) > PARALLEL_MIN_BYTES
    jobs = min(jobs, len(paths))
    if jobs <= 1 or not big:
        return [read_file(p, worker_key) for p in paths]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        return list(pool.map(read_file, paths, repeat(worker_key)))


def read_traces(path: Path | list[Path], worker_key: str = "pid", jobs: int | None = None) -> EventTable:
    """Read a trace file, a directory of per-rank files, or a list of files.

    ``jobs``: reader processes (default: the machine's cores, at most one per file).
    """
    if worker_key not in WORKER_KEYS:
        raise TraceInvalid(f"unknown worker key {worker_key!r} (choose from {', '.join(WORKER_KEYS)})")
    paths = [Path(p) for p in path] if isinstance(path, list) else trace_paths(Path(path))
    if not paths:
        raise TraceInvalid("no trace files given")
    for p in paths:
        if not p.is_file():
            raise TraceInvalid(f"{p}: no such file")
    return _assemble(_read_all(paths, worker_key, jobs or os.cpu_count() or 1))
