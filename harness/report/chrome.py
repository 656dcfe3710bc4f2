"""Annotated Chrome traces: a case's per-rank traces merged into one file, with the anomalies marked.

Every rank file keeps its events (pid/tid as recorded: ranks are separate processes, so pids differ); each
anomalous event a method reported becomes a complete event named ``ANOMALY <name>`` on an extra thread
``chaosbench: anomalies`` of the same worker, coloured red, with the score, expected duration and tree path in its
args. The output (gzip JSON, ``traceEvents`` + ``displayTimeUnit``) opens in Perfetto UI and chrome://tracing.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaosbench.case import atomic_write_bytes
from chaosbench.detectors.api import AnomalousEvent
from chaosbench.errors import TraceInvalid

ANOMALY_TID = "chaosbench: anomalies"


def load_events(path: Path) -> list[dict[str, Any]]:
    """Events of a Chrome-trace JSON(.gz): a dict with ``traceEvents`` or a bare list."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        doc = json.loads(raw)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TraceInvalid(f"{path}: not a readable Chrome trace ({exc})") from exc
    events = doc.get("traceEvents", []) if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        raise TraceInvalid(f"{path}: traceEvents is not a list")
    return [e for e in events if isinstance(e, dict)]


def _marker(ev: AnomalousEvent, method: str) -> dict[str, Any]:
    return {"name": f"ANOMALY {ev.name}", "cat": "chaosbench.anomaly", "ph": "X", "ts": ev.ts, "dur": max(ev.dur, 1.0),
            "pid": ev.worker, "tid": ANOMALY_TID, "cname": "terrible",
            "args": {"method": method, "component": ev.component, "thread": ev.thread, "score": ev.score,
                     "expected_dur_us": ev.expected_dur, "path": ev.path}}


def annotate(trace_files: Sequence[Path], anomalies: Sequence[tuple[str, AnomalousEvent]], out: Path) -> Path:
    """Merge ``trace_files`` and mark ``anomalies`` ((method, event) pairs); write gzip JSON to ``out``."""
    events: list[dict[str, Any]] = []
    for f in trace_files:
        try:
            events.extend(load_events(f))
        except TraceInvalid as exc:
            events.append({"name": f"unreadable trace: {exc}", "ph": "i", "ts": 0, "pid": f.name, "tid": 0, "s": "g"})
    events.extend(_marker(ev, method) for method, ev in anomalies)
    doc = {"traceEvents": events, "displayTimeUnit": "ms",
           "otherData": {"chaosbench": "anomalous events marked on thread " + ANOMALY_TID}}
    atomic_write_bytes(out, gzip.compress(json.dumps(doc, default=str).encode(), compresslevel=5))
    return out
