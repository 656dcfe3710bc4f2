"""What the Analyzer knows about one case: assembled from a CaseView and Outpost's answer.

- Outpost: ``<case>/detectors/outpost.json`` if present, else ``detectors.outpost.detect``
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
from dataclasses import dataclass, field

import numpy as np

from detectors.api import AnomalousEvent, RankedComponent, Result, one_line
from harness.case import CaseView, Topology

Z_CLIP = 1000.0
_COUNTER_NAME = re.compile(r"(_total|_count|_sum|nr_throttled|nr_periods|throttled_time|throttled_usec|failcnt)$", re.I)
_LOG_KEYWORDS = re.compile(r"xid|nvrm|error|fail|restart|oom|killed|timeout|timed out|hang|nccl|gloo|watchdog", re.I)


@dataclass(frozen=True)
class Windows:
    """Seconds of data compared around the injection time."""

    before_s: float = 300.0
    after_s: float = 60.0
    guard_s: float = 2.0  # skipped just before the injection (clock skew between collectors)
    z_min: float = 3.0  # a series is "changed" from this |z| on


@dataclass(frozen=True)
class MetricDeviation:
    component: str
    metric: str
    before: float  # median of the before window (rate per second for counters)
    after: float  # median (gauges) or mean (counter rates) of the after window
    z: float
    counter: bool

    def describe(self) -> str:
        unit = "/s" if self.counter else ""
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
    gaps: tuple[MetricGap, ...]
    logs: tuple[LogLine, ...]
    windows: Windows = field(default_factory=Windows)


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
            return "file", "", Result.from_json(json.loads(f.read_text()))
        except (ValueError, TypeError, KeyError) as exc:
            return "unavailable", f"Outpost answer unreadable ({one_line(exc)})", None
    try:
        from detectors.outpost import detect as outpost_detect  # type: ignore[attr-defined]
    except ImportError as exc:
        return "unavailable", f"Outpost not available ({one_line(exc)})", None
    from detectors.api import run_detector

    result = run_detector("outpost", outpost_detect, case)
    if result.status != "ok":
        return "unavailable", f"Outpost failed ({result.error})", None
    return "detector", "", result


def _is_counter(metric: str, values: np.ndarray) -> bool:
    if _COUNTER_NAME.search(metric):
        return True
    v = values[~np.isnan(values)]
    if len(v) < 6:
        return False
    d = np.diff(v)
    return bool(np.all(d >= 0) and np.count_nonzero(d) >= 3)


def _rate(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dt = np.diff(times)
    dv = np.diff(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where((dt > 0) & (dv >= 0), dv / dt, np.nan)  # a counter reset gives no rate
    return times[1:], r


def _deviation(times: np.ndarray, values: np.ndarray, t0: float, w: Windows, counter: bool) -> tuple[float, float, float] | None:
    if counter:
        times, values = _rate(times, values)
    b = values[(times >= t0 - w.before_s) & (times < t0 - w.guard_s)]
    a = values[(times >= t0) & (times <= t0 + w.after_s)]
    b, a = b[~np.isnan(b)], a[~np.isnan(a)]
    if len(b) < 3 or len(a) < 1:
        return None
    med = float(np.median(b))
    mad = float(np.median(np.abs(b - med)))
    after = float(np.mean(a)) if counter else float(np.median(a))
    scale = max(1.4826 * mad, 0.05 * abs(med), 1e-9)
    z = max(-Z_CLIP, min(Z_CLIP, (after - med) / scale))
    return med, after, z


def metric_deviations(df, t0: float, w: Windows) -> tuple[list[MetricDeviation], list[MetricGap]]:
    """All series whose |z| >= w.z_min (largest first), and the components that stopped reporting."""
    times = df["time"].to_numpy(dtype=float)
    devs: list[MetricDeviation] = []
    fills: dict[str, list[tuple[float, float]]] = {}
    before_mask = (times >= t0 - w.before_s) & (times < t0 - w.guard_s)
    after_mask = (times >= t0) & (times <= t0 + w.after_s)
    for col in df.columns:
        parts = split_column(col) if col != "time" else None
        if parts is None:
            continue
        values = _numeric(df[col])
        if values is None:
            continue
        if before_mask.any() and after_mask.any():
            nan = np.isnan(values)
            fills.setdefault(parts[0], []).append((1 - nan[before_mask].mean(), 1 - nan[after_mask].mean()))
        counter = _is_counter(parts[1], values)
        dev = _deviation(times, values, t0, w, counter)
        if dev and abs(dev[2]) >= w.z_min and math.isfinite(dev[2]):
            devs.append(MetricDeviation(parts[0], parts[1], dev[0], dev[1], dev[2], counter))
    devs.sort(key=lambda d: (-abs(d.z), d.component, d.metric))
    return devs, _gaps(fills)


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
    df = case.metrics()
    devs, gaps = metric_deviations(df, t0, w)
    data_components = {p[0] for c in df.columns if c != "time" and (p := split_column(c))}
    components = tuple(sorted(set(topo.nodes) | set(topo.ranks) | set(topo.components) | data_components))
    return AnalysisContext(
        case_name=case.name,
        topology=topo,
        inject_time=t0,
        components=components,
        outpost=source,
        outpost_note=note,
        events=tuple(sorted(result.events, key=lambda e: -e.score)) if result else (),
        outpost_ranking=result.ranking if result else (),
        outpost_anomalous=result.anomalous if result else None,
        deviations=tuple(devs),
        gaps=tuple(gaps),
        logs=tuple(relevant_logs(case.logs(), t0, w)),
        windows=w,
    )
