from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from chaosbench.detectors.outpost.importers import in_order, read_traces, sort_order
from chaosbench.detectors.outpost.ttc import INNER, LEAF, ROOT, _occurrence, build


def _stack_parents(forest) -> np.ndarray:
    """Reference: the classic per-thread stack (pop what ended, parent = top)."""
    t = forest.table
    parent = np.full(len(t), -1)
    stack: list[int] = []
    for i in range(len(t)):
        if i and t.thread[i] != t.thread[i - 1]:
            stack = []
        while stack and t.ts[stack[-1]] + t.dur[stack[-1]] <= t.ts[i]:
            stack.pop()
        parent[i] = stack[-1] if stack else -1
        stack.append(i)
    return parent


def _write(tmp_path: Path, events: list[dict]) -> Path:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"traceEvents": events}))
    return path


def _x(name: str, ts: float, dur: float, tid: int = 1) -> dict:
    return {"ph": "X", "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur}


def test_nesting_depth_roles_and_paths(tmp_path: Path) -> None:
    events = [_x("step", 0, 100), _x("fwd", 0, 60), _x("mm", 10, 20), _x("mm", 30, 10),
              _x("bwd", 60, 40), _x("zero", 70, 0), _x("other-thread", 5, 10, tid=2)]
    f = build(read_traces(_write(tmp_path, events)))
    t = f.table
    by = {(t.names[t.name[i]], float(t.ts[i])): i for i in range(len(t))}
    assert f.depth[by["mm", 10.0]] == 2 and f.depth[by["zero", 70.0]] == 2
    assert f.parent[by["fwd", 0.0]] == by["step", 0.0]  # equal start: the longer one is the parent
    assert f.parent[by["bwd", 60.0]] == by["step", 0.0]  # adjacent sibling, not a child of fwd
    assert f.path_text(by["zero", 70.0]) == "step > bwd > zero"
    assert f.role[by["step", 0.0]] == ROOT and f.role[by["fwd", 0.0]] == INNER and f.role[by["mm", 30.0]] == LEAF
    assert f.path[by["mm", 10.0]] == f.path[by["mm", 30.0]]
    assert list(f.occ[[by["mm", 10.0], by["mm", 30.0]]]) == [0, 1]
    assert f.depth[by["other-thread", 5.0]] == 0  # trees are per thread


def test_partial_overlap_and_missing_end_do_not_crash(tmp_path: Path) -> None:
    events = [_x("a", 0, 10), _x("b", 5, 10), _x("c", 12, 2), _x("d", 20, 5)]
    f = build(read_traces(_write(tmp_path, events)))
    t = f.table
    names = [t.names[i] for i in t.name]
    i = {n: k for k, n in enumerate(names)}
    assert f.parent[i["b"]] == i["a"]  # b overflows a: still its child (clipped for nesting only)
    assert f.parent[i["c"]] == -1  # after a (and clipped b) ended
    assert t.dur[i["b"]] == 10  # recorded durations are untouched
    assert f.rounds >= 1


def test_kineto_trees_match_the_stack_reference(shared_traces: Path) -> None:
    f = build(read_traces(shared_traces / "kineto-recsys-2rank"))
    assert np.array_equal(f.parent, _stack_parents(f))  # properly nested: identical trees
    assert f.depth.max() == 10
    steps = {int(s) for s in np.unique(f.step) if s >= 0}
    assert steps == {551, 552}  # from ProfilerStep#551/#552, inherited by the events below


def test_sglang_deep_python_stacks(shared_traces: Path) -> None:
    f = build(read_traces(shared_traces / "sglang-qwen3-8b-1rank"))
    assert f.depth.max() >= 40  # python_function call trees
    kids = np.flatnonzero(f.parent >= 0)
    p = f.parent[kids]
    t = f.table
    assert (t.ts[p] <= t.ts[kids]).all() and (t.ts[kids] <= t.ts[p] + t.dur[p]).all()


def test_sort_order_matches_lexsort() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(1, 400))
        th = rng.integers(0, 5, n).astype(np.int32)
        shuffled = rng.integers(0, 30, n).astype(float)
        dur = rng.integers(0, 9, n).astype(float)
        name = rng.integers(0, 3, n)
        for ts in (shuffled, np.sort(shuffled)):  # shuffled, and in time order per thread (the fast path)
            o, ref = sort_order(th, ts, dur, name), np.lexsort((name, -dur, ts, th))
            assert np.array_equal(o, ref)
            assert in_order(th[o], ts[o], dur[o], name[o])
            assert in_order(th, ts, dur, name) == np.array_equal(ref, np.arange(n))


def test_equal_start_and_duration_nest_the_same_way_whatever_the_file_order(tmp_path: Path) -> None:
    # a wrapper and its op rounded to the same microseconds, listed in either order
    events = [_x("step#1", 0, 100), _x("mul_out", 10, 20), _x("aten::mul", 10, 20),
              _x("step#2", 100, 100), _x("aten::mul", 110, 20), _x("mul_out", 110, 20)]
    f = build(read_traces(_write(tmp_path, events)))
    paths = {f.path_text(i) for i in range(len(f.table)) if f.table.names[f.table.name[i]] == "aten::mul"}
    assert len(paths) == 1


def test_occurrence_counts_earlier_rows_of_the_same_group() -> None:
    rng = np.random.default_rng(5)
    for huge_threads in (False, True):  # True: too many groups to pack with the row index
        for _ in range(20):
            n = int(rng.integers(1, 300))
            th = rng.integers(0, 4, n) * (2**50 if huge_threads else 1)
            step = rng.integers(-1, 5, n)
            path = rng.integers(0, 2**64 - 1, 3, dtype=np.uint64)[rng.integers(0, 3, n)]
            seen: dict[tuple, int] = {}
            ref = np.empty(n, dtype=np.int32)
            for i, key in enumerate(zip(th, step, path)):
                ref[i] = seen.get(key, 0)
                seen[key] = ref[i] + 1
            assert np.array_equal(_occurrence(th, step, path), ref)
