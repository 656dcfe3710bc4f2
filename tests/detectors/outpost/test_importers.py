from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from chaosbench.detectors.outpost.importers import in_order, name_ranks, read_traces
from chaosbench.errors import TraceInvalid

from .conftest import FIXTURES

MALFORMED = FIXTURES / "malformed"


def test_kineto_pair_parses_with_metadata(shared_traces: Path) -> None:
    table = read_traces(shared_traces / "kineto-recsys-2rank")
    assert len(table) > 9000  # ~4.8k complete events per rank
    components = {w.component for w in table.workers}
    assert components == {"rank-0", "rank-1"}  # from the file stems sampled_rank-<i>
    assert any(w.name == "pyper:trainer:0:0" for w in table.workers)  # process_name kept
    assert any(name.startswith("thread ") for _, _, name in table.threads)  # thread_name kept
    assert any(n.startswith("ProfilerStep#") for n in table.names)
    assert (table.dur >= 0).all() and np.isfinite(table.ts).all()


def test_sglang_float_timestamps(shared_traces: Path) -> None:
    table = read_traces(shared_traces / "sglang-qwen3-8b-1rank")
    assert len(table) == 58712  # complete events only: flow events (s/f) are dropped
    frac = table.ts - np.floor(table.ts)
    assert (frac > 0).mean() > 0.5  # fractional (nanosecond) parts survive


def test_bare_list_begin_end_and_unmatched_begin() -> None:
    table = read_traces(FIXTURES / "begin-end" / "trace.json")
    names = [table.names[i] for i in table.name]
    assert sorted(names) == ["forward", "inside", "matmul", "never_ends", "step"]  # instant dropped
    dur = dict(zip(names, table.dur))
    assert dur["step"] == pytest.approx(19.875)
    assert dur["forward"] == pytest.approx(9.25)
    assert dur["never_ends"] == pytest.approx(3.0)  # closed at the thread's last end (1033)
    assert table.workers[0].component == "rank-0"


def test_plain_and_gzip_give_the_same_table(tmp_path: Path) -> None:
    events = [{"ph": "X", "name": f"op{i % 3}", "pid": 1, "tid": 2, "ts": 10.0 * i + 0.125, "dur": 5.5}
              for i in range(20)]
    (tmp_path / "a.json").write_text(json.dumps({"traceEvents": events}))
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(json.dumps(events).encode()))
    a, b = read_traces(tmp_path / "a.json"), read_traces(tmp_path / "b.json.gz")
    assert np.array_equal(a.ts, b.ts) and np.array_equal(a.dur, b.dur) and a.names == b.names


def test_rows_come_back_in_thread_time_order_whatever_the_names(tmp_path: Path) -> None:
    # out of time order, two threads interleaved, names that are not all strings, a tie broken by name
    events = [{"ph": "X", "name": n, "pid": 1, "tid": t, "ts": ts, "dur": d}
              for n, t, ts, d in [("b", 2, 30.0, 1.0), (7, 1, 20.0, 2.0), (None, 2, 10.0, 5.0), ("a", 1, 20.0, 2.0),
                                  ("z", 1, 5.0, 30.0)]]
    (tmp_path / "t.json").write_text(json.dumps(events))
    table = read_traces(tmp_path / "t.json")
    assert in_order(table.thread, table.ts, table.dur, name_ranks(table.names)[table.name])
    assert [table.names[i] for i in table.name] == ["None", "b", "z", "7", "a"]  # threads in first-seen order


def test_worker_key_chooses_the_field(tmp_path: Path) -> None:
    events = [{"ph": "X", "name": "op", "pid": 1, "tid": t, "ts": float(i), "dur": 0.5, "cat": "c"}
              for i, t in enumerate([5, 6, 5, 6])]
    (tmp_path / "t.json").write_text(json.dumps(events))
    assert [w.key for w in read_traces(tmp_path, "pid").workers] == ["1"]
    assert sorted(w.key for w in read_traces(tmp_path, "tid").workers) == ["5", "6"]
    assert [w.key for w in read_traces(tmp_path, "file").workers] == ["t"]
    assert [w.key for w in read_traces(tmp_path, "cat").workers] == ["c"]
    with pytest.raises(TraceInvalid, match="worker key"):
        read_traces(tmp_path, "nope")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("truncated.json.gz", "truncated gzip"),
        ("missing_dur.json", "'dur'"),
        ("negative_dur.json", "negative"),
        ("empty.json", "empty file"),
        ("not_a_trace.json", "not a Chrome trace"),
        ("bad_json.json", "invalid JSON"),
    ],
)
def test_malformed_inputs_raise_trace_invalid(name: str, message: str) -> None:
    with pytest.raises(TraceInvalid, match=message) as info:
        read_traces(MALFORMED / name)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(TraceInvalid, match="no such file"):
        read_traces(tmp_path / "nope")
    with pytest.raises(TraceInvalid, match="no trace files"):
        read_traces(tmp_path)


def test_parallel_read_equals_serial(make_case, monkeypatch) -> None:
    from chaosbench.detectors.outpost import importers
    from chaosbench.detectors.outpost.synth import SynthSpec

    case, _ = make_case("par", SynthSpec(ranks=3, steps=4))
    serial = read_traces(case / "traces", jobs=1)
    monkeypatch.setattr(importers, "PARALLEL_MIN_BYTES", 0)
    parallel = read_traces(case / "traces", jobs=2)
    for col in ("worker", "thread", "name", "ts", "dur", "step"):
        assert np.array_equal(getattr(serial, col), getattr(parallel, col)), col
    assert np.array_equal(serial.nesting.parent, parallel.nesting.parent)
    assert serial.workers == parallel.workers and serial.threads == parallel.threads and serial.names == parallel.names


def test_readers_nest_each_file_as_the_whole_table_would(tmp_path: Path, monkeypatch) -> None:
    from chaosbench.detectors.outpost import importers
    from chaosbench.detectors.outpost.nesting import nest

    # two files, each a step with two nested ops and one op running past its parent (clipped)
    for f, pid in (("r0.json", 10), ("r1.json", 11)):
        events = [{"ph": "X", "name": n, "pid": pid, "tid": 1, "ts": ts, "dur": d}
                  for n, ts, d in [("step", 0.0, 100.0), ("fwd", 10.0, 40.0), ("mm", 12.0, 5.0), ("late", 45.0, 70.0)]]
        (tmp_path / f).write_text(json.dumps(events))
    monkeypatch.setattr(importers, "PARALLEL_MIN_BYTES", 0)
    table = read_traces(tmp_path, jobs=2)
    whole = nest(table.thread, table.ts, table.dur)
    assert np.array_equal(table.nesting.parent, whole.parent) and np.array_equal(table.nesting.depth, whole.depth)
    assert table.nesting.rounds == whole.rounds == 1
    names = [table.names[i] for i in table.name]
    parent_name = [names[p] if p >= 0 else None for p in table.nesting.parent]
    assert parent_name == [None, "step", "fwd", "fwd"] * 2
    assert table.nesting.parent.tolist() == [-1, 0, 1, 1, -1, 4, 5, 5]  # the second file's parents are its own rows
