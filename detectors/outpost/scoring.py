"""Detection metrics: event level and case level (pure: DataFrames in, dicts out).

Event level
    ``detected``: component, ts, dur (us) - the localized anomalous events.
    ``units``: component, ts, dur (us) - the units a detector can flag (steps, or root events).
    ``truth``: component, start, end (unix s) - fault windows; a clean case has none.
    precision = detected events inside a window of their component / detected events;
    a unit is positive when it overlaps a window of its component and flagged when it contains a
    detected event: recall = flagged positive units / positive units, FPR = flagged negative
    units / negative units.

Case level
    ``cases``: truth (bool: a fault was injected), verdict (bool), detected_at and start (unix s).
    precision/recall/F1/FPR over cases; time to detection = detected_at - start on true positives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _in_windows(component: np.ndarray, start_us: np.ndarray, end_us: np.ndarray, truth: pd.DataFrame) -> np.ndarray:
    """Whether each interval [start, end] overlaps a truth window of the same component."""
    hit = np.zeros(component.shape[0], dtype=bool)
    for row in truth.itertuples(index=False):  # one iteration per fault window (a handful)
        lo = row.start * 1e6
        hi = np.inf if row.end is None or pd.isna(row.end) else row.end * 1e6
        hit |= (component == row.component) & (end_us >= lo) & (start_us <= hi)
    return hit


def _flagged_units(units: pd.DataFrame, detected: pd.DataFrame) -> np.ndarray:
    """Units containing the start of at least one detected event of the same component."""
    flagged = np.zeros(len(units), dtype=bool)
    for comp, det in detected.groupby("component"):
        idx = np.flatnonzero(units["component"].to_numpy() == comp)
        if idx.size == 0:
            continue
        u = units.iloc[idx]
        order = np.argsort(u["ts"].to_numpy(), kind="stable")
        starts = u["ts"].to_numpy()[order]
        ends = starts + u["dur"].to_numpy()[order]
        pos = np.searchsorted(starts, det["ts"].to_numpy(), side="right") - 1
        ok = pos >= 0
        ok[ok] = det["ts"].to_numpy()[ok] <= ends[pos[ok]]
        flagged[idx[order[np.unique(pos[ok])]]] = True
    return flagged


def event_level(detected: pd.DataFrame, units: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Event-level precision, recall, F1 and FPR (see the module doc)."""
    det_true = _in_windows(detected["component"].to_numpy(), detected["ts"].to_numpy(),
                           (detected["ts"] + detected["dur"]).to_numpy(), truth)
    positive = _in_windows(units["component"].to_numpy(), units["ts"].to_numpy(),
                           (units["ts"] + units["dur"]).to_numpy(), truth)
    flagged = _flagged_units(units, detected)
    tp, fn = int((positive & flagged).sum()), int((positive & ~flagged).sum())
    fp, tn = int((~positive & flagged).sum()), int((~positive & ~flagged).sum())
    precision = _ratio(det_true.sum(), len(detected))
    recall = _ratio(tp, tp + fn)
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall), "fpr": _ratio(fp, fp + tn),
            "detected": int(len(detected)), "detected_true": int(det_true.sum()),
            "units_tp": tp, "units_fp": fp, "units_fn": fn, "units_tn": tn}


def case_level(cases: pd.DataFrame) -> dict:
    """Case-level precision, recall, F1, FPR and time to detection."""
    truth = cases["truth"].to_numpy(dtype=bool)
    verdict = cases["verdict"].to_numpy(dtype=bool)
    tp, fp = int((truth & verdict).sum()), int((~truth & verdict).sum())
    fn, tn = int((truth & ~verdict).sum()), int((~truth & ~verdict).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    hits = cases[truth & verdict]
    ttd = (hits["detected_at"] - hits["start"]).dropna().to_numpy(dtype=float) if len(hits) else np.array([])
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall), "fpr": _ratio(fp, fp + tn),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "ttd_mean_s": float(ttd.mean()) if ttd.size else None,
            "ttd_median_s": float(np.median(ttd)) if ttd.size else None}
