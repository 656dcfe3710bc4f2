"""Engine and Ray logs -> logs.csv (time, component, level, message), sorted by time.

Sources: ``<run_dir>/logs/engine.jsonl`` (the engine's own lines, already tagged
with a component) and each node's Ray logs (raylet, GCS, worker stderr). Ray
lines are kept from WARNING up (plus tracebacks); a worker's lines go to the
rank whose pid is in the file name (``worker-<id>-<job>-<pid>.err``), the rest
to the node. Lines outside [start, end] are dropped.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

# "2026-11-22 05:14:37,123\tINFO x.py:1 -- msg"  (Python logging in Ray)
PY_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\s+(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+(.*)$")
# "[2026-11-22 05:14:37,123 W 10477 10477] (raylet) main.cc:12: msg"  (Ray's C++ logs)
CPP_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ([DIWEF]) \d+ \d+\]\s+(.*)$")
CPP_LEVEL = {"D": "DEBUG", "I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL"}
KEEP = {"WARNING", "ERROR", "CRITICAL"}
RAY_FILES = ("raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err", "worker-*.err", "worker-*.out")
WORKER_PID = re.compile(r"^worker-[0-9a-f]+-[0-9a-f]+-(\d+)\.(?:err|out)$")
MAX_LINES_PER_FILE = 20_000


class LogLine(NamedTuple):
    time: float
    component: str
    level: str
    message: str


def _ts(stamp: str, ms: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(ms) / 1000


def parse_ray_file(path: Path, component: str) -> Iterator[LogLine]:
    last_t: float | None = None
    try:
        lines = path.read_text(errors="replace").splitlines()[-MAX_LINES_PER_FILE:]
    except OSError:
        return
    for raw in lines:
        m = PY_LINE.match(raw) or CPP_LINE.match(raw)
        if m:
            stamp, ms, level, msg = m.groups()
            last_t, level = _ts(stamp, ms), CPP_LEVEL.get(level, level)
            if level in KEEP:
                yield LogLine(last_t, component, level, msg.strip())
        elif last_t is not None and ("Traceback" in raw or re.search(r"\b\w*(Error|Exception)\b", raw)):
            yield LogLine(last_t, component, "ERROR", raw.strip())


def parse_engine_jsonl(path: Path) -> Iterator[LogLine]:
    if not path.is_file():
        return
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
            yield LogLine(float(rec["time"]), str(rec["component"]), str(rec["level"]).upper(), str(rec["message"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue


def ray_lines(log_dir: Path, node: str, pid_rank: dict[int, str]) -> Iterator[LogLine]:
    for pattern in RAY_FILES:
        for f in sorted(log_dir.glob(pattern)):
            m = WORKER_PID.match(f.name)
            component = pid_rank.get(int(m.group(1)), node) if m else node
            yield from parse_ray_file(f, component)


def export_logs_csv(out: Path, *, engine_log: Path, ray_log_dirs: dict[str, Path], pid_rank: dict[int, str],
                    start: float, end: float) -> int:
    """Write logs.csv; return the number of lines written."""
    lines = list(parse_engine_jsonl(engine_log))
    for node, d in ray_log_dirs.items():
        lines += ray_lines(d, node, pid_rank)
    lines = sorted((ln for ln in lines if start <= ln.time <= end), key=lambda ln: (ln.time, ln.component))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "component", "level", "message"])
        for ln in lines:
            w.writerow([f"{ln.time:.3f}", ln.component, ln.level, ln.message[:2000]])
    tmp.replace(out)
    return len(lines)
