"""Lambda sweep over a set of cases: event- and case-level detection metrics per lambda.

Each case is read and scored once (``analyze``); only the threshold changes per lambda. The
ground truth is read here, for scoring only (``chaosbench.case.read_ground_truth``); generated cases
may add ``components`` (several faulty ranks) and ``windows`` (faults active in some steps only).
A truth component that is a node counts all its ranks (topology.json ``rank_node``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chaosbench.case import CaseView, find_cases, read_ground_truth
from chaosbench.detectors.outpost import Analysis, analyze
from chaosbench.detectors.outpost.localize import LocalizeConfig, localize
from chaosbench.detectors.outpost.scoring import case_level, event_level
from chaosbench.detectors.outpost.ttad import anomalous


@dataclass(frozen=True)
class CaseTruth:
    fault_id: str | None
    positive: bool
    start: float | None
    windows: pd.DataFrame  # component, start, end (unix s)


def case_truth(case_dir: Path) -> CaseTruth:
    gt = read_ground_truth(case_dir)
    fault = gt.get("fault_id")
    if not fault:
        return CaseTruth(None, False, None, pd.DataFrame(columns=["component", "start", "end"]))
    comps = list(gt.get("components") or [gt.get("component")])
    topo_file = Path(case_dir) / "topology.json"
    rank_node = json.loads(topo_file.read_text()).get("rank_node", {}) if topo_file.is_file() else {}
    expanded = [r for c in comps for r in ([k for k, v in rank_node.items() if v == c] or [c])]
    wins = gt.get("windows") or [[gt.get("start"), gt.get("end")]]
    rows = [(c, w[0], w[1]) for c in expanded for w in wins if w[0] is not None]
    return CaseTruth(fault, True, gt.get("start"), pd.DataFrame(rows, columns=["component", "start", "end"]))


def units(analysis: Analysis) -> pd.DataFrame:
    """Scoring units: one per (worker, step) spanning its root events when the trace has steps,
    else every root event."""
    f = analysis.forest
    t = f.table
    roots = f.parent < 0
    stepped = roots & (f.step >= 0)
    rows = np.flatnonzero(stepped if stepped.any() else roots)
    comp = np.array([w.component for w in t.workers], dtype=object)
    df = pd.DataFrame({"worker": t.worker[rows], "step": f.step[rows] if stepped.any() else rows,
                       "ts": t.ts[rows], "end": t.ts[rows] + t.dur[rows]})
    g = df.groupby(["worker", "step"], sort=False).agg(ts=("ts", "min"), end=("end", "max")).reset_index()
    return pd.DataFrame({"component": comp[g["worker"].to_numpy()], "ts": g["ts"].to_numpy(),
                         "dur": (g["end"] - g["ts"]).to_numpy()})


def detections(analysis: Analysis, lam: float, loc: LocalizeConfig):
    f, s = analysis.forest, analysis.scores
    result = localize(f, s, anomalous(f, s, lam, analysis.cfg), loc, analysis.split_us)
    t = f.table
    rows = result.localized
    comp = np.array([w.component for w in t.workers], dtype=object)
    det = pd.DataFrame({"component": comp[t.worker[rows]], "ts": t.ts[rows], "dur": t.dur[rows]})
    return result, det


def sweep(root: Path, lambdas: list[float], worker_key: str = "pid") -> dict:
    """Metrics per lambda over every case below ``root`` that has traces."""
    loc = LocalizeConfig()
    per_lam: dict[float, dict[str, list]] = {lam: {"cases": [], "det": [], "units": [], "truth": []} for lam in lambdas}
    skipped: list[str] = []
    for case_dir in find_cases(Path(root)):
        view = CaseView(case_dir)
        files = view.trace_files()
        if not files:
            skipped.append(view.path.name)
            continue
        truth = case_truth(case_dir)
        analysis = analyze(files, worker_key, split=view.inject_time)
        unit_df = units(analysis).assign(component=lambda d, n=view.path.name: n + "/" + d["component"])
        win = truth.windows.assign(component=view.path.name + "/" + truth.windows["component"].astype(str))
        for lam in lambdas:
            result, det = detections(analysis, lam, loc)
            det = det.assign(component=view.path.name + "/" + det["component"].astype(str), fault=truth.fault_id or "clean")
            acc = per_lam[lam]
            acc["cases"].append({"case": view.path.name, "fault": truth.fault_id or "clean", "truth": truth.positive,
                                 "verdict": result.anomalous, "start": truth.start,
                                 "detected_at": None if result.first_ts_us is None else result.first_ts_us / 1e6})
            acc["det"].append(det)
            acc["units"].append(unit_df.assign(fault=truth.fault_id or "clean"))
            acc["truth"].append(win)
    return {"lambdas": [_summary(lam, per_lam[lam]) for lam in lambdas], "skipped": skipped}


def _summary(lam: float, acc: dict) -> dict:
    cases = pd.DataFrame(acc["cases"], columns=["case", "fault", "truth", "verdict", "start", "detected_at"])
    if cases.empty:
        return {"lambda": lam, "cases": 0}
    det, unit_df = pd.concat(acc["det"], ignore_index=True), pd.concat(acc["units"], ignore_index=True)
    truth = pd.concat(acc["truth"], ignore_index=True)
    per_fault = {}
    for fault in sorted(cases["fault"].unique()):
        per_fault[fault] = {"cases": int((cases["fault"] == fault).sum()),
                            "event": event_level(det[det["fault"] == fault], unit_df[unit_df["fault"] == fault], truth),
                            "case": case_level(cases[cases["fault"] == fault])}
    return {"lambda": lam, "cases": int(len(cases)), "case": case_level(cases),
            "event": event_level(det, unit_df, truth), "per_fault": per_fault}
