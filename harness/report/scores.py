"""scores.json, leaderboard.md and leaderboard.csv.

scores.json (``schema: chaosbench.scores/1``)::

    schema, generated_at, dataset (path), k (5), run {tasks, computed, reused, workers, ray, timeout_s, wall_s}
    methods[]   name, kind (trivial|kat|rcaeval|plugin), ref, speed, needs[], available, reason,
                scores: null when unavailable, else
                  n_runs, n_failed, errors {"<status>: <one line>": count},
                  component | node | metric: {n, ac {"1".."5"}, avg (Avg@5), chance_ac {...}, chance_avg, lift} | null
                  per_fault {fault_id: {component, node, metric}}          (same shape)
                  per_fault_detection {fault_id: {case, event}}             (detection scores over that fault's cases)
                  case_detection | event_detection: {n_faulty, n_clean, tp, fp, fn, tn, precision, recall, f1, fpr}
                  time_to_detection {n, mean_s, median_s}, runtime {n, mean_s, median_s, max_s, total_s}
    fault_types[]  fault ids with at least one scored case
    cases[]     id, path, layout (chaosbench|rcaeval), status (completed|not-verified|...|invalid), problem,
                fault_id, component, realism, start, end
    outcomes[]  one record per (case, method): harness.score.aggregate.CaseOutcome
    explanations  {"analyzer": {fault_id | "all": {cases, valid_format_rate, first_try_valid_rate,
                  attempt_valid_rate, fault_class_accuracy, category_accuracy, component_accuracy, rouge_l}}}
                  (detectors.analyzer.metrics; empty when the Analyzer was not run)

AC@k/Avg@k follow RCAEval (harness.score.ranking); failed/timeout runs count as misses. Clean cases count only
for detection. Invalid and not-verified cases are listed, never scored.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.case import atomic_write_json, atomic_write_text
from harness.eval.discover import CaseRef, ground_truth
from harness.eval.methods import Method
from harness.score.aggregate import CaseOutcome, MethodScores

SCHEMA = "chaosbench.scores/1"


def _case_record(ref: CaseRef) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": ref.id, "path": str(ref.path), "layout": ref.layout, "status": ref.status,
                           "problem": ref.problem}
    try:
        truth = ground_truth(ref)
    except Exception:  # noqa: BLE001 - an unreadable truth is already the case's problem
        truth = {}
    for key in ("fault_id", "component", "realism", "start", "end"):
        rec[key] = truth.get(key)  # type: ignore[union-attr]
    return rec


def build(dataset_dir: Path, refs: Sequence[CaseRef], methods: Sequence[Method],
          availability: dict[str, tuple[bool, str]], outcomes: Sequence[CaseOutcome],
          scores: dict[str, MethodScores], run: dict[str, Any],
          explanations: dict[str, Any] | None = None) -> dict[str, Any]:
    faults = sorted({o["fault_id"] for o in outcomes if o["fault_id"] and o["scored"]})
    return {
        "schema": SCHEMA,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": str(dataset_dir),
        "k": 5,
        "run": run,
        "methods": [{
            "name": m.name, "kind": m.kind, "ref": m.ref, "speed": m.speed, "needs": list(m.needs),
            "available": availability[m.name][0], "reason": availability[m.name][1],
            "scores": asdict(scores[m.name]) if m.name in scores else None,
        } for m in methods],
        "fault_types": faults,
        "cases": [_case_record(r) for r in refs],
        "outcomes": list(outcomes),
        "explanations": explanations or {},
    }


def fmt(x: float | None) -> str:
    """Two decimals, or an en dash for 'not applicable'."""
    return "–" if x is None else f"{x:.2f}"


def _level(s: dict[str, Any] | None, level: str) -> dict[str, Any] | None:
    return (s or {}).get(level)


def leaderboard_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per method (best component-level Avg@5 first; unavailable last) with per-fault AC@1 columns."""
    faults = doc["fault_types"]
    header = ["method", "kind", "status", "cases", "failed", "AC@1", "AC@3", "AC@5", "Avg@5", "chance Avg@5",
              "lift", "node AC@1", "node Avg@5", "metric AC@1", *[f"{f} AC@1" for f in faults],
              "case F1", "FPR", "event F1", "runtime s/case"]
    rows = []
    for m in doc["methods"]:
        s = m["scores"]
        comp, node, met = _level(s, "component"), _level(s, "node"), _level(s, "metric")
        ac = (comp or {}).get("ac", {})
        per = [fmt(((s or {}).get("per_fault", {}).get(f, {}).get("component") or {}).get("ac", {}).get("1"))
               for f in faults]
        det, ev = (s or {}).get("case_detection") or {}, (s or {}).get("event_detection") or {}
        status = "ok" if m["available"] else "unavailable"
        rows.append([m["name"], m["kind"], status, str((comp or {}).get("n", 0)), str((s or {}).get("n_failed", 0)),
                     fmt(ac.get("1")), fmt(ac.get("3")), fmt(ac.get("5")), fmt((comp or {}).get("avg")),
                     fmt((comp or {}).get("chance_avg")), fmt((comp or {}).get("lift")),
                     fmt((node or {}).get("ac", {}).get("1")), fmt((node or {}).get("avg")),
                     fmt((met or {}).get("ac", {}).get("1")), *per, fmt(det.get("f1")), fmt(det.get("fpr")),
                     fmt(ev.get("f1")), fmt(((s or {}).get("runtime") or {}).get("mean_s"))])
    rows.sort(key=lambda r: (r[2] != "ok", -(float(r[8]) if r[8] != "–" else -1.0), r[0]))
    return header, rows


def leaderboard_md(doc: dict[str, Any]) -> str:
    header, rows = leaderboard_rows(doc)
    n_scored = sum(1 for c in doc["cases"] if c["status"] == "completed" and c["fault_id"])
    n_clean = sum(1 for c in doc["cases"] if c["status"] == "completed" and not c["fault_id"])
    lines = [f"# Leaderboard: {doc['dataset']}", "",
             f"{n_scored} faulty cases scored, {n_clean} clean, "
             f"{sum(c['status'] != 'completed' for c in doc['cases'])} reported but not scored. "
             "AC@k/Avg@k as in RCAEval (component level unless stated); failed runs count as misses; "
             "chance = a uniformly random ranking over the same candidates; lift = Avg@5 - chance Avg@5.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    lines += _detection_per_fault_md(doc)
    missing = [m for m in doc["methods"] if not m["available"]]
    if missing:
        lines += ["", "Unavailable methods:", ""] + [f"- {m['name']}: {m['reason']}" for m in missing]
    return "\n".join(lines) + "\n"


def _detection_per_fault_md(doc: dict[str, Any]) -> list[str]:
    """Event-level precision / recall per fault type, for the methods that report events."""
    faults = doc["fault_types"]
    rows = []
    for m in doc["methods"]:
        per = ((m["scores"] or {}).get("per_fault_detection") or {})
        if not any((per.get(f) or {}).get("event") for f in faults):
            continue
        cells = []
        for f in faults:
            ev = (per.get(f) or {}).get("event") or {}
            cells.append(f"{fmt(ev.get('precision'))} / {fmt(ev.get('recall'))}")
        rows.append("| " + " | ".join([m["name"], *cells]) + " |")
    if not rows:
        return []
    return ["", "Event-level detection per fault type: precision / recall", "",
            "| method | " + " | ".join(faults) + " |", "|" + "---|" * (len(faults) + 1), *rows]


def leaderboard_csv(doc: dict[str, Any]) -> str:
    header, rows = leaderboard_rows(doc)
    buf = io.StringIO()
    w = csv.writer(buf)
    reasons = {m["name"]: m["reason"] for m in doc["methods"] if not m["available"]}
    w.writerow([*header, "reason"])
    w.writerows([["" if c == "–" else c for c in r] + [reasons.get(r[0], "")] for r in rows])
    return buf.getvalue()


def write_results(out_dir: Path, *, dataset_dir: Path, refs: Sequence[CaseRef], methods: Sequence[Method],
                  availability: dict[str, tuple[bool, str]], outcomes: Sequence[CaseOutcome],
                  scores: dict[str, MethodScores], run: dict[str, Any],
                  explanations: dict[str, Any] | None = None) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = build(dataset_dir, refs, methods, availability, outcomes, scores, run, explanations)
    doc = json.loads(json.dumps(doc, default=str))  # int keys -> strings, as any reader of the file sees them
    atomic_write_json(out_dir / "scores.json", doc)
    atomic_write_text(out_dir / "leaderboard.md", leaderboard_md(doc))
    atomic_write_text(out_dir / "leaderboard.csv", leaderboard_csv(doc))
    return doc


def load_scores(results_dir: Path) -> dict[str, Any]:
    from harness.errors import InputInvalid

    f = Path(results_dir) / "scores.json"
    try:
        doc = json.loads(f.read_text())
    except FileNotFoundError as exc:
        raise InputInvalid(f"{f}: missing (run `chaosbench eval` first)") from exc
    except json.JSONDecodeError as exc:
        raise InputInvalid(f"{f}: not valid JSON ({exc})") from exc
    if doc.get("schema") != SCHEMA:
        raise InputInvalid(f"{f}: schema {doc.get('schema')!r}, expected {SCHEMA!r}")
    return doc
