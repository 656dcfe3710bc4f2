"""What the Analyzer knows about one case: assembled from a CaseView and Outpost's answer.

- Outpost: ``<case>/detectors/outpost.json`` if present, else ``chaosbench.detectors.outpost.detect``
  if importable, else none (the analysis then runs on metrics and logs only, and says so).
- Metric deviations: each ``<component>_<metric>`` series, before vs after the injection
  time, as a robust z-score (median/MAD of the before window; counters become rates).
- Metric gaps: components whose series stop being reported after the injection.
- Log lines around the injection: warnings, errors, and lines matching fault keywords.

Ground truth is never read: only CaseView is used.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from chaosbench.case import CaseView, Topology
from chaosbench.detectors.api import AnomalousEvent, RankedComponent, Result, one_line
from chaosbench.errors import CaseInvalid

Z_CLIP = 1000.0
FROZEN_MIN = 6  # samples stuck in a row, beyond the collector's 5 s forward-fill of a short scrape gap
REL_FLOOR = 0.02  # the robust scale is at least 2 % of the level: near-constant series need a real shift
_COUNTER_NAME = re.compile(r"(_total|_count|_sum|nr_throttled|nr_periods|throttled_time|throttled_usec|failcnt)$", re.I)
SeriesKind = Literal["gauge", "counter", "rate"]
_LOG_KEYWORDS = re.compile(r"xid|nvrm|error|fail|restart|oom|killed|timeout|timed out|hang|nccl|gloo|watchdog", re.I)


@dataclass(frozen=True)
class Windows:
    """Seconds of data compared around the injection time."""

    before_s: float = 300.0
    after_s: float = 30.0  # the shipped scenarios hold a fault for 25 s; longer faults are seen in part
    smooth_s: float = 10.0  # the after window is judged by its most deviant 10 s stretch
    guard_s: float = 2.0  # skipped just before the injection (clock skew between collectors)
    z_min: float = 3.0  # a series is "changed" from this |z| on
    z_weak: float = 1.5  # weaker changes only break ties between candidate components
    min_before_s: float = 8.0  # the timeline may shorten the before window down to this
    min_after_s: float = 5.0


@dataclass(frozen=True)
class Span:
    """The compared stretches of the timeline, unix seconds: [before_start, before_end) and
    [after_start, after_end]."""

    before_start: float
    before_end: float
    after_start: float
    after_end: float

    def describe(self, t0: float) -> str:
        return (f"before [{self.before_start - t0:+.0f} s, {self.before_end - t0:+.0f} s), "
                f"after [{self.after_start - t0:+.0f} s, {self.after_end - t0:+.0f} s] of the injection")


def compare_span(t0: float, w: Windows, timeline: list[dict]) -> tuple[Span, str]:
    """The windows, trimmed by the run's timeline (CaseView.events(), fault stages excluded): the before
    window starts once the profiler runs, so both sides carry its overhead; the after window stops when the
    traces are flushed (seconds of busy ranks) or the load ends."""
    before_start, after_end, notes = t0 - w.before_s, t0 + w.after_s, []
    started = [r["t"] for r in timeline if r.get("stage") == "traces.start" and r.get("event") == "end"
               and _as_float(r.get("t")) is not None and r["t"] < t0]
    if started and t0 - max(started) >= w.min_before_s and max(started) > before_start:
        before_start = max(started)
        notes.append("before window starts with the profiler")
    for stage in ("traces.stop", "load.end"):
        ts = [r["t"] for r in timeline if r.get("stage") == stage and r.get("event") in ("start", "point")
              and _as_float(r.get("t")) is not None and r["t"] > t0]
        if ts and min(ts) < after_end:
            after_end = max(min(ts), t0 + w.min_after_s)
            notes.append(f"after window ends at {stage}")
    return Span(before_start, t0 - w.guard_s, t0, after_end), "; ".join(notes)


@dataclass(frozen=True)
class MetricDeviation:
    component: str
    metric: str
    before: float  # median of the before window (per second for counters and rates)
    after: float  # median (gauges) or mean (counters, rates) of the after window's most deviant stretch
    z: float
    kind: SeriesKind  # how the series was read: gauge, cumulative counter (as a rate), rate

    def describe(self) -> str:
        unit = "/s" if self.kind == "counter" else ""
        return f"{self.component} {self.metric} {_fmt(self.before)}{unit} -> {_fmt(self.after)}{unit} (z={self.z:+.1f})"


@dataclass(frozen=True)
class MetricGap:
    component: str
    before_fill: float  # share of non-missing samples before the injection (mean over the gapped series)
    after_fill: float
    share: float  # share of the component's series that went missing


@dataclass(frozen=True)
class LogLine:
    time: float
    component: str
    level: str
    message: str


@dataclass(frozen=True)
class AnalysisContext:
    case_name: str
    topology: Topology
    inject_time: float
    components: tuple[str, ...]  # every component named in topology or data
    outpost: str  # "file" | "detector" | "unavailable"
    outpost_note: str
    events: tuple[AnomalousEvent, ...]
    outpost_ranking: tuple[RankedComponent, ...]
    outpost_anomalous: bool | None
    deviations: tuple[MetricDeviation, ...]  # |z| >= z_min, largest first
    weak_deviations: tuple[MetricDeviation, ...]  # z_weak <= |z| < z_min
    gaps: tuple[MetricGap, ...]
    logs: tuple[LogLine, ...]
    windows: Windows = field(default_factory=Windows)
    span: Span | None = None  # the compared windows (None: no metrics)
    span_note: str = ""


def _fmt(x: float) -> str:
    if x != x:  # NaN
        return "nan"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.4g}"


def split_column(column: str) -> tuple[str, str] | None:
    """``rank-2_DCGM_FI_DEV_SM_CLOCK`` -> (``rank-2``, ``DCGM_FI_DEV_SM_CLOCK``); component names hold no ``_``."""
    comp, sep, metric = column.partition("_")
    if not sep or not comp or not metric:
        return None
    return comp, metric


def load_outpost(case: CaseView) -> tuple[str, str, Result | None]:
    """(source, note, result): Outpost's answer from the case, from the detector, or none."""
    f = case.path / "detectors" / "outpost.json"
    if f.is_file():
        import json

        try:
            saved = Result.from_json(json.loads(f.read_text()))
        except (ValueError, TypeError, KeyError) as exc:
            return "unavailable", f"Outpost answer unreadable ({one_line(exc)})", None
        if saved.status != "ok":
            return "unavailable", f"Outpost {saved.status} ({saved.error})", None
        return "file", "", saved
    try:
        from chaosbench.detectors.outpost import detect as outpost_detect  # type: ignore[attr-defined]
    except ImportError as exc:
        return "unavailable", f"Outpost not available ({one_line(exc)})", None
    from chaosbench.detectors.api import run_detector

    result = run_detector("outpost", outpost_detect, case)
    if result.status != "ok":
        return "unavailable", f"Outpost failed ({result.error})", None
    return "detector", "", result


def series_kind(metric: str, values: np.ndarray) -> SeriesKind:
    """rate: already per second (the collector's ``:rate`` columns); counter: cumulative by its name, turned
    into a rate. Never guessed from the values: a growing gauge (a process's RSS) is not a counter."""
    if metric.endswith(":rate"):
        return "rate"
    if _COUNTER_NAME.search(metric):
        return "counter"
    return "gauge"


def _rate(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dt = np.diff(times)
    dv = np.diff(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where((dt > 0) & (dv >= 0), dv / dt, np.nan)  # a counter reset gives no rate
    return times[1:], r


def _deviation(times: np.ndarray, values: np.ndarray, span: Span, w: Windows,
               kind: SeriesKind) -> tuple[float, float, float] | None:
    if kind == "counter":
        times, values = _rate(times, values)
    b = values[(times >= span.before_start) & (times < span.before_end)]
    a = values[(times >= span.after_start) & (times <= span.after_end)]
    b, a = b[~np.isnan(b)], a[~np.isnan(a)]
    if len(b) < 3 or len(a) < 1:
        return None
    med = float(np.median(b))
    mad = float(np.median(np.abs(b - med)))
    step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    after = _most_deviant(a, med, max(3, round(w.smooth_s / step)) if step > 0 else 3, kind)
    scale = max(1.4826 * mad, REL_FLOOR * abs(med), 1e-9)
    z = max(-Z_CLIP, min(Z_CLIP, (after - med) / scale))
    return med, after, z


def _most_deviant(a: np.ndarray, ref: float, k: int, kind: SeriesKind) -> float:
    """Median (gauges) or mean (rates: bursts count) of the k-sample stretch farthest from ``ref``:
    a fault shorter than the after window is not averaged away, one outlier sample does not count."""
    if len(a) <= k:
        return float(np.median(a)) if kind == "gauge" else float(np.mean(a))
    win = np.lib.stride_tricks.sliding_window_view(a, k)
    stats = np.median(win, axis=1) if kind == "gauge" else win.mean(axis=1)
    return float(stats[int(np.argmax(np.abs(stats - ref)))])


def _longest_run(v: np.ndarray) -> tuple[int, float]:
    """Length and value of the longest run of identical consecutive values."""
    if len(v) == 0:
        return 0, float("nan")
    starts = np.r_[0, np.flatnonzero(np.diff(v) != 0) + 1]
    lengths = np.diff(np.r_[starts, len(v)])
    i = int(np.argmax(lengths))
    return int(lengths[i]), float(v[starts[i]])


def _frozen_share(b: np.ndarray, a: np.ndarray) -> float | None:
    """A gauge that moved before and is stuck at an old value after (the collector forward-fills a
    target it cannot scrape): the share of the after window it is stuck for. None: not a moving gauge.
    ``b``: every sample before the injection (guard included: the last one is what gets repeated)."""
    b, a = b[~np.isnan(b)], a[~np.isnan(a)]
    if len(np.unique(b)) < 5 or len(a) < FROZEN_MIN:
        return None
    run_b, _ = _longest_run(b)
    run_a, value = _longest_run(a)
    if run_a >= max(FROZEN_MIN, 3 * run_b) and b.min() <= value <= b.max():
        return run_a / len(a)
    return 0.0


def metric_deviations(df, span: Span, w: Windows) -> tuple[list[MetricDeviation], list[MetricGap]]:
    """All series whose |z| >= w.z_weak (largest first), and the components that stopped reporting."""
    import pandas as pd

    df = df.assign(time=pd.to_numeric(df["time"], errors="coerce")).dropna(subset=["time"]).sort_values("time")
    times = df["time"].to_numpy(dtype=float)
    devs: list[MetricDeviation] = []
    fills: dict[str, list[tuple[float, float]]] = {}
    frozen: dict[str, list[float]] = {}
    before_mask = (times >= span.before_start) & (times < span.before_end)
    after_mask = (times >= span.after_start) & (times <= span.after_end)
    for col in df.columns:
        parts = split_column(col) if col != "time" else None
        values = _numeric(df[col]) if parts else None
        if parts is None or values is None:
            continue
        kind = series_kind(parts[1], values)
        if before_mask.any() and after_mask.any():
            nan = np.isnan(values)
            fills.setdefault(parts[0], []).append((1 - nan[before_mask].mean(), 1 - nan[after_mask].mean()))
            pre = (times >= span.before_start) & (times < span.after_start)
            share = _frozen_share(values[pre], values[after_mask]) if kind == "gauge" else None
            if share is not None:
                frozen.setdefault(parts[0], []).append(share)
        dev = _deviation(times, values, span, w, kind)
        if dev and abs(dev[2]) >= w.z_weak and math.isfinite(dev[2]):
            devs.append(MetricDeviation(parts[0], parts[1], dev[0], dev[1], dev[2], kind))
    devs.sort(key=lambda d: (-abs(d.z), d.component, d.metric))
    gaps = {g.component: g for g in _frozen_gaps(frozen)} | {g.component: g for g in _gaps(fills)}
    return devs, [gaps[c] for c in sorted(gaps)]


def _frozen_gaps(frozen: dict[str, list[float]]) -> list[MetricGap]:
    """Components whose moving gauges (at least 80% of them, at least 3) froze after the injection."""
    gaps = []
    for comp, shares in sorted(frozen.items()):
        stuck = [s for s in shares if s > 0]
        if len(shares) >= 3 and len(stuck) >= 0.8 * len(shares):
            gaps.append(MetricGap(comp, 1.0, 1.0 - float(np.mean(stuck)), len(stuck) / len(shares)))
    return gaps


def _gaps(fills: dict[str, list[tuple[float, float]]]) -> list[MetricGap]:
    """Components with at least half of their series reported before and mostly missing after."""
    gaps = []
    for comp, pairs in sorted(fills.items()):
        gapped = [(b, a) for b, a in pairs if b >= 0.8 and a <= 0.5 * b]
        if len(gapped) >= 0.5 * len(pairs):
            before = float(np.mean([p[0] for p in gapped]))
            after = float(np.mean([p[1] for p in gapped]))
            gaps.append(MetricGap(comp, before, after, len(gapped) / len(pairs)))
    return gaps


def _numeric(series) -> np.ndarray | None:
    import pandas as pd

    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    if np.isnan(values).all():
        return None
    return values


def relevant_logs(logs, t0: float, w: Windows, limit: int = 500) -> list[LogLine]:
    """Warnings, errors and keyword lines from shortly before to shortly after the injection window."""
    out: list[LogLine] = []
    if logs is None or len(logs) == 0 or "message" not in logs.columns:
        return out
    for row in logs.itertuples(index=False):
        t = _as_float(getattr(row, "time", None))
        if t is None or not (t0 - 30 <= t <= t0 + w.after_s + 30):
            continue
        level = str(getattr(row, "level", "") or "").upper()
        msg = str(getattr(row, "message", "") or "")
        if level in ("WARNING", "WARN", "ERROR", "CRITICAL", "FATAL") or _LOG_KEYWORDS.search(msg):
            out.append(LogLine(t, str(getattr(row, "component", "") or ""), level, msg.strip()))
        if len(out) >= limit:
            break
    return out


def _as_float(x: object) -> float | None:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def build_context(case: CaseView, windows: Windows | None = None, outpost: Result | None = None) -> AnalysisContext:
    """Everything the backends reason from. ``outpost`` overrides the case's own Outpost answer."""
    w = windows or Windows()
    topo = case.topology
    t0 = case.inject_time
    if outpost is not None:
        source, note, result = "given", "", outpost
    else:
        source, note, result = load_outpost(case)
    if result is not None and result.anomalous is False and result.events:
        # Outpost's own case-level verdict wins: its sub-threshold events are noise to the Analyzer
        note = f"Outpost found no case-level anomaly ({len(result.events)} weak events ignored)"
        result = replace(result, events=(), ranking=())
    try:
        df = case.metrics()
    except CaseInvalid as exc:  # traces and logs may still tell the story
        df = None
        note = "; ".join(filter(None, [note, f"no metrics ({exc})"]))
    span, span_note = compare_span(t0, w, list(case.events()))
    devs, gaps = metric_deviations(df, span, w) if df is not None else ([], [])
    try:
        logs = relevant_logs(case.logs(), t0, w)
    except (ValueError, OSError) as exc:  # pandas' parser errors are ValueErrors
        logs = []
        note = "; ".join(filter(None, [note, f"logs.csv unreadable ({one_line(exc)})"]))
    data_components = {p[0] for c in df.columns if c != "time" and (p := split_column(c))} if df is not None else set()
    components = tuple(sorted(set(topo.nodes) | set(topo.ranks) | set(topo.components) | data_components))
    return AnalysisContext(
        case_name=getattr(case, "case_id", None) or case.name,  # CaseView.name is becoming case_id
        topology=topo,
        inject_time=t0,
        components=components,
        outpost=source,
        outpost_note=note,
        events=tuple(sorted(result.events, key=lambda e: -e.score)) if result else (),
        outpost_ranking=result.ranking if result else (),
        outpost_anomalous=result.anomalous if result else None,
        deviations=tuple(d for d in devs if abs(d.z) >= w.z_min),
        weak_deviations=tuple(d for d in devs if abs(d.z) < w.z_min),
        gaps=tuple(gaps),
        logs=tuple(logs),
        windows=w,
        span=span,
        span_note=span_note,
    )
