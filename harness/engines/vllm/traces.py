"""vLLM's torch-profiler output turned into the case's per-rank Chrome traces.

vLLM writes one Kineto file per worker and profiling window into its profiler directory
(``<worker>.<ts>.pt.trace.json[.gz]``, worker names carry the TP rank). Each new file is
shifted to unix-epoch microseconds, its process renamed ``rank-<i>`` and merged into
``<trace_dir>/rank-<i>.json.gz`` (the layout the mini engine writes, so Outpost reads both).
``TraceSweeper`` does this from a background thread while the server runs.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

# vLLM names worker traces "dp0_pp0_tp<i>_dcp0_ep0_rank<g>.<ns>.pt.trace.json.gz"
_RANK_PATTERNS = (re.compile(r"(?:^|_)tp(\d+)(?:_|\.)"), re.compile(r"(?:^|_)rank(\d+)(?:_|\.)"))
FRONTEND_MARK = ".async_llm."  # the API server's own CPU trace, not a worker's
TRACE_SUFFIXES = (".pt.trace.json", ".pt.trace.json.gz")


def rank_of(filename: str) -> int:
    """The TP rank in a vLLM trace file name; files without one (single process) are rank 0."""
    for pattern in _RANK_PATTERNS:
        m = pattern.search(filename)
        if m:
            return int(m.group(1))
    return 0


def is_trace_file(path: Path) -> bool:
    """A finished worker trace (not the front end's, not a file still being written under a temp name)."""
    return path.is_file() and path.name.endswith(TRACE_SUFFIXES) and FRONTEND_MARK not in path.name


def load_kineto(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    doc = _loads(gzip.decompress(raw) if path.name.endswith(".gz") else raw)
    return doc if isinstance(doc, dict) else {"traceEvents": doc}


def _loads(data: bytes) -> Any:
    try:
        import orjson  # 5-10x faster on 100k-event traces; conversion competes with the engine for CPU

        return orjson.loads(data)
    except ImportError:
        return json.loads(data)


def _dumps(obj: Any) -> bytes:
    try:
        import orjson

        return orjson.dumps(obj)
    except ImportError:
        return json.dumps(obj, separators=(",", ":")).encode()


def to_epoch_events(doc: dict[str, Any], rank: str) -> tuple[list[dict[str, Any]], tuple[float, float]]:
    """Events with epoch-microsecond ``ts`` and the process named ``rank``; also the (start, end) window in s."""
    base_ns = doc.get("baseTimeNanoseconds")
    offset = base_ns / 1000.0 if isinstance(base_ns, (int, float)) else 0.0
    out: list[dict[str, Any]] = []
    pids: set[Any] = set()
    lo, hi = float("inf"), float("-inf")
    for e in doc.get("traceEvents", []):
        if not isinstance(e, dict) or (e.get("ph") == "M" and e.get("name") == "process_name"):
            continue
        if isinstance(e.get("ts"), (int, float)):
            e = {**e, "ts": e["ts"] + offset}
            lo, hi = min(lo, e["ts"]), max(hi, e["ts"] + float(e.get("dur", 0) or 0))
        if "pid" in e:
            pids.add(e["pid"])
        out.append(e)
    first = lo if lo != float("inf") else 0.0
    out += [{"ph": "M", "name": "process_name", "pid": p, "tid": 0, "ts": first, "args": {"name": rank}}
            for p in sorted(pids, key=str)]
    window = (first / 1e6, (hi if hi != float("-inf") else first) / 1e6)
    return out, window


def merge_into(path: Path, rank: str, events: list[dict[str, Any]], window: tuple[float, float],
               source: str, tmp_dir: Path) -> None:
    """Append one window to the rank's gzip Chrome trace, atomically (the temporary file lives in ``tmp_dir``,
    outside the trace directory, so a collector copying it never sees a partial file)."""
    doc: dict[str, Any] = {"traceEvents": [], "displayTimeUnit": "ms",
                           "chaosbench": {"rank": rank, "ts_unit": "unix epoch microseconds", "engine": "vllm",
                                          "device": "cpu", "windows": [], "sources": []}}
    if path.exists():
        doc = _loads(gzip.decompress(path.read_bytes()))
    doc["traceEvents"].extend(events)
    doc["chaosbench"]["windows"].append([window[0], window[1]])
    doc["chaosbench"].setdefault("sources", []).append(source)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{path.name}.tmp{os.getpid()}"
    tmp.write_bytes(gzip.compress(_dumps(doc), compresslevel=3))
    os.replace(tmp, path)


def convert_new(profile_dir: Path, trace_dir: Path, done: set[str]) -> list[Path]:
    """Convert every finished trace file not in ``done`` (updated in place); returns the rank files written."""
    written: list[Path] = []
    if not profile_dir.is_dir():
        return written
    for f in sorted(profile_dir.iterdir()):
        if f.name in done or not is_trace_file(f):
            continue
        try:
            doc = load_kineto(f)
        except (OSError, ValueError, EOFError):
            continue  # still being written: picked up on the next sweep
        rank = f"rank-{rank_of(f.name)}"
        events, window = to_epoch_events(doc, rank)
        trace_dir.mkdir(parents=True, exist_ok=True)
        dest = trace_dir / f"{rank}.json.gz"
        merge_into(dest, rank, events, window, f.name, tmp_dir=profile_dir / ".merge")
        done.add(f.name)
        written.append(dest)
    return written


class TraceSweeper:
    """Polls vLLM's profiler directory and merges finished files into the per-rank traces."""

    def __init__(self, profile_dir: Path, trace_dir: Path, interval_s: float = 1.0):
        self.profile_dir, self.trace_dir, self.interval_s = Path(profile_dir), Path(trace_dir), interval_s
        self.done: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="vllm-trace-sweeper", daemon=True)

    def start(self) -> TraceSweeper:
        self.trace_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def sweep(self) -> list[Path]:
        with self._lock:
            return convert_new(self.profile_dir, self.trace_dir, self.done)

    def stop(self) -> list[Path]:
        """Stop the thread and convert what is left."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        return self.sweep()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sweep()
