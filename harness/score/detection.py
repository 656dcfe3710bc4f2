"""Detection scores: is there a fault, and when and where did the method see it.

Case level (methods that give a verdict, ``Result.anomalous``): a faulty case flagged is a true positive, a
clean case flagged a false positive. Precision = TP/(TP+FP), recall = TP/(TP+FN), F1 their harmonic mean,
FPR = FP/(FP+TN) (clean runs only). Methods without a verdict get None everywhere. A case without a verdict from a
method that gives verdicts (its run failed or timed out) is a miss: the wrong verdict, FN when faulty, FP when
clean; it never drops out.

Event level (methods that return anomalous events): an event matches when it lies on the faulty component
(or a rank of the faulty node) and, when its time is absolute, overlaps the fault window. Precision = matching
events / all events; recall = faulty cases with at least one matching event / faulty cases; FPR = clean cases
with any event / clean cases. A failed run is a miss here too: no matching event on a faulty case, and a false
positive on a clean one.

Every score carries a 95 % bootstrap interval over cases (``ci``; chaosbench.score.stats).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from chaosbench.score.stats import Interval, detection_intervals

# Chrome-trace timestamps above this are unix-epoch microseconds (year > 2001); below, relative to the trace.
_EPOCH_US = 1e15


@dataclass(frozen=True)
class DetectionScores:
    n_faulty: int
    n_clean: int
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float | None
    recall: float | None
    f1: float | None
    fpr: float | None
    ci: dict[str, Interval] = field(default_factory=dict)  # precision, recall, f1, fpr -> [low, high] | None


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    if r == 0.0:
        return 0.0  # nothing found: F1 is 0 even when precision is undefined (no positive predicted)
    if p is None or r is None:
        return None
    return 2 * p * r / (p + r) if p + r else 0.0


def _scores(rows: list[tuple[int, int, int, int, float, float]]) -> DetectionScores:
    """Scores and intervals from per-case rows (tp, fp, fn, tn, precision numerator, precision denominator)."""
    tp, fp, fn, tn, pnum, pden = (sum(col) for col in zip(*rows, strict=True))
    p, r = _ratio(pnum, pden), _ratio(tp, tp + fn)
    return DetectionScores(tp + fn, fp + tn, tp, fp, fn, tn, p, r, _f1(p, r), _ratio(fp, fp + tn),
                           detection_intervals(np.array(rows, dtype=float)))


def case_detection(verdicts: Sequence[bool | None], faulty: Sequence[bool]) -> DetectionScores | None:
    """Case-level scores from one verdict per case; a case without a verdict (None: failed, timed out) is a miss.

    Returns None when the method gave no verdict at all (it does not do case-level detection).
    """
    pairs = list(zip(verdicts, faulty, strict=True))
    if all(v is None for v, _ in pairs):
        return None
    rows = []
    for v, f in pairs:
        flagged = (not f) if v is None else bool(v)  # no verdict: the wrong one
        tp, fp = int(flagged and f), int(flagged and not f)
        rows.append((tp, fp, int(not flagged and f), int(not flagged and not f), tp, tp + fp))
    return _scores(rows)


@dataclass(frozen=True)
class EventCase:
    """What one case contributes at event level."""

    faulty: bool
    n_events: int
    n_matching: int  # events on the right component within the fault window (0 for clean cases)
    failed: bool = False  # the run failed or timed out: a miss


def event_matches(
    component: str,
    ts_us: float,
    dur_us: float,
    target: str | None,
    window: tuple[float, float] | None,
    rank_node: Mapping[str, str],
) -> bool:
    """Does one event point at the injected fault? ``window`` is (start, end) in unix seconds."""
    if target is None:
        return False
    placed = component == target or rank_node.get(component) == target
    if not placed:
        return False
    if window is None or ts_us < _EPOCH_US:
        return True  # relative trace clock: only the place can be checked
    start_s, end_s = ts_us / 1e6, (ts_us + max(dur_us, 0.0)) / 1e6
    return start_s <= window[1] and end_s >= window[0]


def event_detection(cases: Sequence[EventCase]) -> DetectionScores | None:
    """Event-level scores; None when no case has any event (the method does not report events)."""
    if not any(c.n_events for c in cases):
        return None
    rows = []
    for c in cases:
        if c.faulty:
            hit = int(c.n_matching > 0 and not c.failed)
            rows.append((hit, 0, 1 - hit, 0, c.n_matching, c.n_events))
        else:
            alarm = int(c.n_events > 0 or c.failed)
            rows.append((0, alarm, 0, 1 - alarm, 0, c.n_events))
    return _scores(rows)


def time_to_detection(detected_at: Sequence[float | None], starts: Sequence[float | None]) -> dict[str, float | None]:
    """Seconds from the verified injection to the method's first anomaly (faulty cases it detected)."""
    delays = [d - s for d, s in zip(detected_at, starts, strict=True) if d is not None and s is not None]
    if not delays:
        return {"n": 0, "mean_s": None, "median_s": None}
    return {"n": len(delays), "mean_s": statistics.fmean(delays), "median_s": statistics.median(delays)}
