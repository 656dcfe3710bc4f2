"""scores.json, leaderboard.md and leaderboard.csv.

scores.json (``schema: chaosbench.scores/2``)::

    schema, generated_at, dataset (path), k (5), run {tasks, computed, reused, workers, ray, timeout_s, wall_s, split}
    statistics  {confidence, method, n_resamples, seed, unit}: how every interval was computed (chaosbench.score.stats)
    methods[]   name, kind (trivial|kat|rcaeval|plugin), ref, speed, needs[], available, reason,
                scores: null when unavailable, else
                  n_runs, n_failed, errors {"<status>: <one line>": count},
                  component | node | metric: {n, ac {"1".."5"}, avg (Avg@5), chance_ac {...}, chance_avg, lift,
                                              ac_ci {"1".."5": [low, high] | null}, avg_ci} | null
                  per_fault {fault_id: {component, node, metric}}          (same shape)
                  per_fault_detection {fault_id: {case, event}}             (detection scores over that fault's cases)
                  case_detection | event_detection: {n_faulty, n_clean, tp, fp, fn, tn, precision, recall, f1, fpr,
                                                      ci {precision, recall, f1, fpr: [low, high] | null}}
                  per_intensity {"0.00-0.25" .. "0.75-1.00" | "n/a": component-level scores} (the detectability curve)
                  time_to_detection {n, mean_s, median_s}, runtime {n, mean_s, median_s, max_s, total_s}
    fault_types[]  fault ids with at least one scored case
    cases[]     id, case_id, path, layout (run|chaosbench|rcaeval), status (completed|not-verified|failed|aborted|
                invalid), problem (the run's reason, or what is wrong), split, intensity, target_kind,
                fault_id, component, realism, start, end
    not_scored  {status: {reason: count}}: every case that is not scored, and why
    counts      {by_fault, by_target_kind, by_intensity, by_split, by_status}: cases per value (all statuses)
    comparisons[]  paired bootstrap on the faulty cases both methods ran: {kind (vs-baseline|top-two), a, b, n,
                ac1 {n, diff, ci, p}, avg5 {...}}: each method against the best trivial baseline, the top two
    outcomes[]  one record per (case, method): chaosbench.score.aggregate.CaseOutcome
    explanations  {"analyzer": {fault_id | "all": {cases, valid_format_rate, first_try_valid_rate,
                  attempt_valid_rate, fault_class_accuracy, category_accuracy, component_accuracy, rouge_l}}}
                  (chaosbench.detectors.analyzer.metrics; empty when the Analyzer was not run)

AC@k/Avg@k follow RCAEval (chaosbench.score.ranking); failed/timeout runs count as misses. Clean cases count only
for detection. Invalid, not-verified, failed and aborted cases are listed with their reasons, never scored.
Intervals: 95 % bootstrap over cases, percentile method (chaosbench.score.stats).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaosbench.case import atomic_write_json, atomic_write_text
from chaosbench.eval.discover import CaseRef, ground_truth
from chaosbench.eval.methods import Method
from chaosbench.score import stats
from chaosbench.score.aggregate import CaseOutcome, MethodScores, comparisons, intensity_bin

SCHEMA = "chaosbench.scores/2"


def _case_record(ref: CaseRef) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": ref.id, "case_id": ref.case_id, "path": str(ref.path), "layout": ref.layout,
                           "status": ref.status, "problem": ref.problem, "split": ref.split,
                           "intensity": ref.intensity, "target_kind": ref.target_kind}
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
    cases = [_case_record(r) for r in refs]
    return {
        "schema": SCHEMA,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": str(dataset_dir),
        "k": 5,
        "run": run,
        "methods": [{
            "name": m.name, "kind": m.kind, "ref": m.ref, "speed": m.speed, "needs": list(m.needs),
            "available": availability[m.name][0], "reason": availability[m.name][1],
            "scores": asdict(scores[m.name]) if m.name in scores else None,
        } for m in methods],
        "fault_types": faults,
        "statistics": {"confidence": stats.CONFIDENCE, "method": stats.METHOD, "n_resamples": stats.N_RESAMPLES,
                       "seed": stats.SEED, "unit": "case", "library": "scipy.stats.bootstrap"},
        "cases": cases,
        "not_scored": _not_scored(cases),
        "counts": _counts(cases),
        "comparisons": comparisons(outcomes, scores),
        "outcomes": list(outcomes),
        "explanations": explanations or {},
    }


def _not_scored(cases: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for c in cases:
        if c["status"] != "completed":
            reasons = out.setdefault(c["status"], {})
            why = c["problem"] or "no reason recorded"
            reasons[why] = reasons.get(why, 0) + 1
    return out


def _counts(cases: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    keys = {"by_fault": lambda c: c["fault_id"] or "clean", "by_target_kind": lambda c: c["target_kind"] or "-",
            "by_intensity": lambda c: intensity_bin(c["intensity"]) if c["fault_id"] else "clean",
            "by_split": lambda c: c["split"] or "-", "by_status": lambda c: c["status"]}
    out: dict[str, dict[str, int]] = {}
    for name, key in keys.items():
        counts: dict[str, int] = {}
        for c in cases:
            counts[key(c)] = counts.get(key(c), 0) + 1
        out[name] = dict(sorted(counts.items()))
    return out


def fmt(x: float | None) -> str:
    """Two decimals, or an en dash for 'not applicable'."""
    return "–" if x is None else f"{x:.2f}"


def _level(s: dict[str, Any] | None, level: str) -> dict[str, Any] | None:
    return (s or {}).get(level)


Cell = tuple[float | None, list[float] | None]  # (value, 95 % interval)


def fmt_ci(cell: Cell) -> str:
    """'0.45 [0.30, 0.60]', or the value alone when it has no interval."""
    value, ci = cell
    return fmt(value) if value is None or not ci else f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"


def leaderboard_table(doc: dict[str, Any]) -> tuple[list[str], list[list[str | Cell]]]:
    """One row per method (best component-level Avg@5 first; unavailable last) with per-fault AC@1 columns.
    Scores with an interval are (value, interval) cells; the rest are strings."""
    faults = doc["fault_types"]
    header = ["method", "kind", "status", "cases", "failed", "AC@1", "AC@3", "AC@5", "Avg@5", "chance Avg@5",
              "lift", "node AC@1", "node Avg@5", "metric AC@1", *[f"{f} AC@1" for f in faults],
              "case precision", "case recall", "case F1", "FPR", "event F1", "runtime s/case"]
    rows: list[list[str | Cell]] = []
    for m in doc["methods"]:
        s = m["scores"]
        comp, node, met = _level(s, "component") or {}, _level(s, "node") or {}, _level(s, "metric") or {}

        def ac(level: dict[str, Any], k: str) -> Cell:
            return (level.get("ac") or {}).get(k), (level.get("ac_ci") or {}).get(k)

        def det(d: dict[str, Any], key: str) -> Cell:
            return d.get(key), (d.get("ci") or {}).get(key)

        per = [ac(((s or {}).get("per_fault", {}).get(f) or {}).get("component") or {}, "1") for f in faults]
        cd, ev = (s or {}).get("case_detection") or {}, (s or {}).get("event_detection") or {}
        status = "ok" if m["available"] else "unavailable"
        rows.append([m["name"], m["kind"], status, str(comp.get("n", 0)), str((s or {}).get("n_failed", 0)),
                     ac(comp, "1"), ac(comp, "3"), ac(comp, "5"), (comp.get("avg"), comp.get("avg_ci")),
                     fmt(comp.get("chance_avg")), fmt(comp.get("lift")), ac(node, "1"),
                     (node.get("avg"), node.get("avg_ci")), ac(met, "1"), *per, det(cd, "precision"),
                     det(cd, "recall"), det(cd, "f1"), det(cd, "fpr"), det(ev, "f1"),
                     fmt(((s or {}).get("runtime") or {}).get("mean_s"))])
    rows.sort(key=lambda r: (r[2] != "ok", -(r[8][0] if r[8][0] is not None else -1.0), str(r[0])))  # type: ignore[index]
    return header, rows


def leaderboard_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The leaderboard as text cells, intervals in brackets."""
    header, rows = leaderboard_table(doc)
    return header, [[c if isinstance(c, str) else fmt_ci(c) for c in r] for r in rows]


def not_scored_lines(doc: dict[str, Any]) -> list[str]:
    """'- failed (3): reason (2), reason (1)' per status of the cases that are not scored."""
    return [f"- {status} ({sum(reasons.values())}): " + "; ".join(f"{why} ({n})" for why, n in reasons.items())
            for status, reasons in doc.get("not_scored", {}).items()]


def comparison_rows(doc: dict[str, Any]) -> list[list[str]]:
    def p(x: float | None) -> str:
        return "–" if x is None else f"{x:.4f}"

    return [[c["kind"], c["a"], c["b"], str(c["n"]), fmt_ci((c["ac1"]["diff"], c["ac1"]["ci"])), p(c["ac1"]["p"]),
             fmt_ci((c["avg5"]["diff"], c["avg5"]["ci"])), p(c["avg5"]["p"])] for c in doc.get("comparisons", [])]


COMPARISON_HEADER = ["comparison", "method", "against", "paired cases", "AC@1 difference", "p", "Avg@5 difference",
                     "p"]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]]


def leaderboard_md(doc: dict[str, Any]) -> str:
    header, rows = leaderboard_rows(doc)
    n_scored = sum(1 for c in doc["cases"] if c["status"] == "completed" and c["fault_id"])
    n_clean = sum(1 for c in doc["cases"] if c["status"] == "completed" and not c["fault_id"])
    st = doc.get("statistics", {})
    split = (doc.get("run") or {}).get("split", "all")
    intro = (f"{n_scored} faulty cases scored, {n_clean} clean, "
             f"{sum(c['status'] != 'completed' for c in doc['cases'])} reported but not scored. "
             "AC@k/Avg@k as in RCAEval (component level unless stated); failed runs count as misses; "
             "chance = a uniformly random ranking over the same candidates; lift = Avg@5 - chance Avg@5. "
             f"[low, high]: {st.get('confidence', 0.95):.0%} bootstrap interval over cases ({st.get('method')}, "
             f"{st.get('n_resamples')} resamples, seed {st.get('seed')}).")
    lines = [f"# Leaderboard: {doc['dataset']} (split {split})", "", intro, "", *_md_table(header, rows)]
    if doc.get("comparisons"):
        lines += ["", "Paired bootstrap (method - against, same faulty cases; p two-sided):", "",
                  *_md_table(COMPARISON_HEADER, comparison_rows(doc))]
    if doc.get("not_scored"):
        lines += ["", "Cases not scored (status: reason (count)):", "", *not_scored_lines(doc)]
    counts = doc.get("counts") or {}
    for key, title in (("by_fault", "fault"), ("by_target_kind", "target kind"), ("by_intensity", "intensity"),
                       ("by_split", "split"), ("by_status", "status")):
        if counts.get(key):
            lines += ["", f"Cases per {title}: " + ", ".join(f"{k} {n}" for k, n in counts[key].items())]
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
    """The leaderboard, one row per method; each score with an interval is followed by '<name> low' and
    '<name> high' columns."""
    header, rows = leaderboard_table(doc)
    cols: list[str] = []
    for i, h in enumerate(header):
        cols.append(h)
        if rows and not isinstance(rows[0][i], str):
            cols += [f"{h} low", f"{h} high"]
    buf = io.StringIO()
    w = csv.writer(buf)
    reasons = {m["name"]: m["reason"] for m in doc["methods"] if not m["available"]}

    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.4f}"

    w.writerow([*cols, "reason"])
    for r in rows:
        out: list[str] = []
        for c in r:
            if isinstance(c, str):
                out.append("" if c == "–" else c)
            else:
                value, ci = c
                out += [num(value), num(ci[0] if ci else None), num(ci[1] if ci else None)]
        w.writerow([*out, reasons.get(str(r[0]), "")])
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
    from chaosbench.errors import InputInvalid

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
