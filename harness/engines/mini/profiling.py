"""Per-rank torch.profiler windows turned into Kineto Chrome traces that Outpost can read.

Between /start_profile and /stop_profile each rank records a torch.profiler window. On stop
the Kineto JSON is rewritten: ``ts`` become unix-epoch microseconds, the process is named
``rank-<i>``, events inside an ``engine.step`` get ``args.step``, and the window is MERGED
into ``<trace_dir>/rank-<i>.json.gz`` (one file per rank; windows listed under
``chaosbench.windows``).

Beyond the tensor-parallel-only layout (data or pipeline parallel, layout.py) a window's meta
carries the rank's ``place`` and the trace names it, so that comparisons across workers match
like with like: the header ``chaosbench`` gets layout/replica/stage/tp_index, the process gets
``process_labels`` (``replica-<d>,replica-<d>.stage-<p>,tp-<t>``), each thread a role prefix
(``compute: thread ...``, ``tp-comm: thread ... (pt_gloo_runloop)``) and each complete event
``args.role``: ``step`` (engine.step), ``compute``, ``tp-comm`` (all-reduces), ``pp-comm``
(activation send/recv: pp.recv, pp.send, pp.send.wait, gloo:send/recv) or ``dp-comm`` (``dp.*``
ranges; inference replicas exchange nothing, so none today).
"""

from __future__ import annotations

import bisect
import gzip
import json
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:  # torch is imported lazily: ``finalize`` runs in a light child process
    from torch.profiler import profile

ROLES = ("step", "compute", "tp-comm", "pp-comm", "dp-comm")
_P2P_NAMES = {"gloo:send", "gloo:recv", "c10d::send", "c10d::recv_", "c10d::recv_any_source_"}


class Place(TypedDict):
    """Where a rank sits: layout ``DPxPPxTP``, its replica, stage and tp index."""

    layout: str
    replica: int
    stage: int
    tp_index: int


def place(layout: str, replica: int, stage: int, tp_index: int) -> Place:
    return Place(layout=layout, replica=replica, stage=stage, tp_index=tp_index)


def role_of(name: str) -> str:
    """The stream or role an event belongs to, by its name (see the module docstring)."""
    if name == "engine.step":
        return "step"
    if name.startswith("pp.") or name in _P2P_NAMES:
        return "pp-comm"
    if name.startswith("dp."):
        return "dp-comm"
    if "allreduce" in name or "all_reduce" in name:
        return "tp-comm"
    return "compute"


def start_profiler(ops: bool = False) -> profile:
    """Start a CPU profiler window. ``ops=False`` records only the ``record_function`` ranges (engine.step,
    model.forward, layer.<i>, attention, mlp, allreduce, sampler): far fewer events, so tracing stays cheap.
    ``ops=True`` also records every aten:: op, as a stock torch.profiler trace has."""
    import torch.autograd.profiler as autograd_profiler
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], record_shapes=False, with_stack=False, profile_memory=False)
    if ops:
        prof.start()
        return prof
    enable = autograd_profiler._enable_profiler
    try:
        from torch._C._profiler import RecordScope

        user_only = {RecordScope.USER_SCOPE}
        autograd_profiler._enable_profiler = lambda config, activities, scopes=None: enable(config, activities,
                                                                                            user_only)
        prof.start()
    finally:
        autograd_profiler._enable_profiler = enable
    return prof


def stop_profiler(prof: profile, raw_path: Path) -> None:
    """Stop and write Kineto's raw JSON (fast, in C++); ``finalize`` does the slow rewrite elsewhere."""
    prof.stop()
    prof.export_chrome_trace(str(raw_path))


def write_meta(raw_path: Path, meta: dict[str, Any]) -> Path:
    path = raw_path.with_suffix(".meta.json")
    path.write_text(json.dumps(meta))
    return path


def finalize(raw_path: Path) -> Path:
    """Rewrite one raw window (plus its ``.meta.json``) into the rank's merged trace file; remove the raw files."""
    meta_path = raw_path.with_suffix(".meta.json")
    meta = json.loads(meta_path.read_text())
    raw = json.loads(raw_path.read_text())
    where = meta.get("place")
    events = annotate(to_epoch(raw, meta["anchor_epoch_us"]), meta["rank"], meta["steps"], where)
    out = raw_path.parent / f"{meta['rank']}.json.gz"
    merge_window(out, meta["rank"], events, (meta["window"][0], meta["window"][1]), where)
    raw_path.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)
    return out


def to_epoch(trace: dict[str, Any], anchor_epoch_us: float | None = None) -> list[dict[str, Any]]:
    """Shift event ``ts`` to unix-epoch microseconds (Kineto writes them relative to baseTimeNanoseconds)."""
    base_ns = trace.get("baseTimeNanoseconds")
    offset = base_ns / 1000.0 if isinstance(base_ns, (int, float)) else 0.0
    events = [e for e in trace.get("traceEvents", []) if isinstance(e, dict)]
    if anchor_epoch_us is not None:
        anchor = next((e for e in events if e.get("name") == ANCHOR), None)
        if anchor is not None and abs(anchor["ts"] + offset - anchor_epoch_us) > 1e6:
            offset = anchor_epoch_us - anchor["ts"]  # base time missing or on another clock
    out = []
    for e in events:
        if e.get("name") == ANCHOR:
            continue
        if isinstance(e.get("ts"), (int, float)):
            e = {**e, "ts": e["ts"] + offset}
        out.append(e)
    return out


ANCHOR = "chaosbench.clock_anchor"


def annotate(events: list[dict[str, Any]], rank: str, steps: list[int],
             where: Place | None = None) -> list[dict[str, Any]]:
    """Name processes ``rank``, and tag every event inside the k-th engine.step with args.step; with a
    ``where`` (layouts beyond tensor-parallel only), also name the rank's place and each event's role."""
    spans = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in events
                   if e.get("name") == "engine.step" and e.get("ph") == "X")
    starts = [s for s, _ in spans]
    step_of = dict(zip(starts, steps, strict=False))
    out = []
    pids = set()
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            continue
        if isinstance(e.get("pid"), int):
            pids.add(e["pid"])
        if e.get("ph") == "X" and starts:
            i = bisect.bisect_right(starts, e["ts"]) - 1
            if i >= 0 and e["ts"] <= spans[i][1] and starts[i] in step_of:
                e = {**e, "args": {**(e.get("args") or {}), "step": step_of[starts[i]]}}
        out.append(e)
    for pid in sorted(pids):
        out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "ts": starts[0] if starts else 0,
                    "args": {"name": rank}})
    return out if where is None else name_roles(out, where)


def name_roles(events: list[dict[str, Any]], where: Place) -> list[dict[str, Any]]:
    """``args.role`` on every complete event, a role prefix on every thread name, the place as process labels."""
    roles: dict[tuple[Any, Any], Counter[str]] = {}
    out = []
    for e in events:
        if e.get("ph") == "X":
            role = role_of(str(e.get("name", "")))
            e = {**e, "args": {**(e.get("args") or {}), "role": role}}
            roles.setdefault((e.get("pid"), e.get("tid")), Counter())[role] += 1
        out.append(e)
    labels = f"replica-{where['replica']},replica-{where['replica']}.stage-{where['stage']},tp-{where['tp_index']}"
    named = []
    for e in out:
        if e.get("ph") == "M" and e.get("name") == "process_labels":
            continue
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            e = {**e, "args": {**e["args"], "name": f"{_thread_role(roles.get((e.get('pid'), e.get('tid'))))}: "
                                                   f"{e['args'].get('name', '')}"}}
        named.append(e)
        if e.get("ph") == "M" and e.get("name") == "process_name":
            named.append({**e, "name": "process_labels", "args": {"labels": labels}})
    return named


def _thread_role(counts: Counter[str] | None) -> str:
    """The thread that runs the engine steps is ``compute``; any other takes its most frequent role."""
    if not counts:
        return "idle"
    if counts["step"]:
        return "compute"
    return counts.most_common(1)[0][0]


def merge_window(path: Path, rank: str, events: list[dict[str, Any]], window: tuple[float, float],
                 where: Place | None = None) -> None:
    """Append a window's events to the rank's trace file (gzip Chrome JSON), atomically."""
    doc: dict[str, Any] = {"traceEvents": [], "displayTimeUnit": "ms",
                           "chaosbench": {"rank": rank, "ts_unit": "unix epoch microseconds",
                                          "device": "emulated", "windows": []}}
    if where is not None:
        doc["chaosbench"].update(where)
    if path.exists():
        with gzip.open(path, "rt") as fh:
            doc = json.load(fh)
    doc["traceEvents"].extend(events)
    doc["chaosbench"]["windows"].append([window[0], window[1]])
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with gzip.open(tmp, "wt", compresslevel=3) as fh:
        json.dump(doc, fh, separators=(",", ":"))
    os.replace(tmp, path)


def anchor_event() -> None:
    """Emit the clock anchor range right after reading the epoch clock."""
    from torch.profiler import record_function

    with record_function(ANCHOR):
        pass


def main(argv: list[str] | None = None) -> int:
    """``python -m chaosbench.engines.mini.profiling RAW.json ...``: finalize raw windows (run off the engine's path)."""
    import sys

    for arg in argv if argv is not None else sys.argv[1:]:
        print(finalize(Path(arg)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
