"""Trace post-processing: epoch timestamps, rank process names, step args, merged windows."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import torch
from torch.profiler import record_function

from chaosbench.engines.mini import profiling


def _x(name: str, ts: float, dur: float, tid: int = 1) -> dict:
    return {"ph": "X", "name": name, "ts": ts, "dur": dur, "pid": 42, "tid": tid, "args": {}}


def test_annotate_names_process_and_tags_steps() -> None:
    events = [_x("engine.step", 100, 50), _x("model.forward", 105, 40), _x("gloo:all_reduce", 120, 5, tid=2),
              _x("engine.step", 200, 50), _x("attention", 210, 10), _x("between", 170, 5),
              {"ph": "M", "name": "process_name", "pid": 42, "tid": 0, "args": {"name": "python"}}]
    out = profiling.annotate(events, "rank-3", [7, 8])
    by_name = {e["name"]: e for e in out if e["ph"] == "X"}
    assert by_name["model.forward"]["args"]["step"] == 7
    assert by_name["gloo:all_reduce"]["args"]["step"] == 7  # other thread, same step window
    assert by_name["attention"]["args"]["step"] == 8
    assert "step" not in by_name["between"]["args"]
    names = [e for e in out if e["ph"] == "M" and e["name"] == "process_name"]
    assert names == [{"ph": "M", "name": "process_name", "pid": 42, "tid": 0, "ts": 100, "args": {"name": "rank-3"}}]


def test_real_profiler_window_is_in_epoch_microseconds(tmp_path: Path) -> None:
    prof = profiling.start_profiler()
    anchor = time.time_ns() / 1000.0
    profiling.anchor_event()
    with record_function("engine.step"):
        torch.ones(8, 8) @ torch.ones(8, 8)
    raw_path = tmp_path / ".rank-1.raw.json"
    profiling.stop_profiler(prof, raw_path)
    profiling.write_meta(raw_path, {"rank": "rank-1", "steps": [4], "anchor_epoch_us": anchor,
                                    "window": [anchor / 1e6, anchor / 1e6 + 1]})
    assert profiling.main([str(raw_path)]) == 0
    assert not raw_path.exists() and not raw_path.with_suffix(".meta.json").exists()
    with gzip.open(tmp_path / "rank-1.json.gz", "rt") as fh:
        events = json.load(fh)["traceEvents"]
    step = next(e for e in events if e.get("name") == "engine.step")
    assert abs(step["ts"] - anchor) < 5e6  # within seconds of the wall clock, i.e. epoch microseconds
    assert step["args"]["step"] == 4
    assert not any(e.get("name") == profiling.ANCHOR for e in events)


def test_windows_merge_into_one_file(tmp_path: Path) -> None:
    path = tmp_path / "rank-0.json.gz"
    profiling.merge_window(path, "rank-0", [_x("engine.step", 1, 1)], (1.0, 2.0))
    profiling.merge_window(path, "rank-0", [_x("engine.step", 5, 1)], (5.0, 6.0))
    with gzip.open(path, "rt") as fh:
        doc = json.load(fh)
    assert [e["ts"] for e in doc["traceEvents"]] == [1, 5]
    assert doc["chaosbench"]["windows"] == [[1.0, 2.0], [5.0, 6.0]]
    assert doc["chaosbench"]["device"] == "emulated"


def test_default_window_keeps_role_ranges_only(tmp_path: Path) -> None:
    names = {}
    for ops in (False, True):
        prof = profiling.start_profiler(ops=ops)
        with record_function("attention"):
            torch.mm(torch.ones(4, 4), torch.ones(4, 4))
        profiling.stop_profiler(prof, tmp_path / f"{ops}.json")
        events = json.loads((tmp_path / f"{ops}.json").read_text())["traceEvents"]
        names[ops] = {e["name"] for e in events if e.get("ph") == "X"}
    assert "attention" in names[False] and not any(n.startswith("aten::") for n in names[False])
    assert {"attention", "aten::mm"} <= names[True]


def _events_with_threads() -> list[dict]:
    return [_x("engine.step", 100, 50), _x("pp.recv", 101, 5), _x("model.forward", 106, 30), _x("allreduce", 110, 2),
            _x("gloo:all_reduce", 110, 2, tid=2), _x("pp.send", 137, 1), _x("gloo:send", 137, 1),
            _x("pp.send.wait", 140, 3), _x("sampler", 144, 1),
            {"ph": "M", "name": "process_name", "pid": 42, "tid": 0, "args": {"name": "python"}},
            {"ph": "M", "name": "process_labels", "pid": 42, "tid": 0, "args": {"labels": "CPU"}},
            {"ph": "M", "name": "thread_name", "pid": 42, "tid": 1, "args": {"name": "thread 1 (python)"}},
            {"ph": "M", "name": "thread_name", "pid": 42, "tid": 2, "args": {"name": "thread 2 (pt_gloo_runloop)"}}]


def test_tensor_parallel_only_traces_get_no_layout_names() -> None:
    out = profiling.annotate(_events_with_threads(), "rank-1", [3])
    assert not any("role" in (e.get("args") or {}) for e in out)
    threads = sorted(e["args"]["name"] for e in out if e["name"] == "thread_name")
    assert threads == ["thread 1 (python)", "thread 2 (pt_gloo_runloop)"]
    assert [e["args"] for e in out if e["name"] == "process_labels"] == [{"labels": "CPU"}]


def test_placed_traces_name_replica_stage_tp_and_roles(tmp_path: Path) -> None:
    where = profiling.place("2x2x2", replica=1, stage=0, tp_index=1)
    out = profiling.annotate(_events_with_threads(), "rank-5", [3], where)
    roles = {e["name"]: e["args"]["role"] for e in out if e["ph"] == "X"}
    assert roles == {"engine.step": "step", "pp.recv": "pp-comm", "model.forward": "compute", "allreduce": "tp-comm",
                     "gloo:all_reduce": "tp-comm", "pp.send": "pp-comm", "gloo:send": "pp-comm",
                     "pp.send.wait": "pp-comm", "sampler": "compute"}
    assert all(e["args"]["step"] == 3 for e in out if e["ph"] == "X")
    threads = sorted(e["args"]["name"] for e in out if e["name"] == "thread_name")
    assert threads == ["compute: thread 1 (python)", "tp-comm: thread 2 (pt_gloo_runloop)"]
    assert [e["args"] for e in out if e["name"] == "process_name"] == [{"name": "rank-5"}]
    assert [e["args"] for e in out if e["name"] == "process_labels"] == [{"labels": "replica-1,replica-1.stage-0,tp-1"}]
    path = tmp_path / "rank-5.json.gz"
    profiling.merge_window(path, "rank-5", out, (1.0, 2.0), where)
    with gzip.open(path, "rt") as fh:
        head = json.load(fh)["chaosbench"]
    assert (head["rank"], head["layout"], head["replica"], head["stage"], head["tp_index"]) == ("rank-5", "2x2x2", 1, 0,
                                                                                                1)
    assert profiling.role_of("dp.all_gather") == "dp-comm" and set(profiling.ROLES) >= set(roles.values())
