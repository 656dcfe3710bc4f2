"""One self-contained report.html from a results directory (scores.json + the case directories it names).

Sections: leaderboard, unavailable methods, per-fault tables, detection, failures, then one block per case with a
timeline figure (ingress latency, the true component's key metrics, the injected window), what each method blamed,
Outpost's anomalous events, the Analyzer's chain, and a link to the case's annotated Chrome trace (Perfetto UI).
Every faulty case and fault table carries its real|emulated label. Figures are inline PNG: no external files
except the annotated traces under ``traces/``.
"""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path
from typing import Any

from chaosbench.case import atomic_write_text
from chaosbench.report.scores import (
    COMPARISON_HEADER,
    comparison_rows,
    fmt,
    fmt_ci,
    leaderboard_rows,
    load_scores,
    not_scored_lines,
)

MAX_CASE_PLOTS = 300
MAX_EVENTS = 10
CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}
th{background:#f3f3f3}.real{background:#2a7;color:#fff;padding:1px 5px;border-radius:3px;font-size:11px}
.emulated{background:#e80;color:#fff;padding:1px 5px;border-radius:3px;font-size:11px}
.bad{color:#b00}.case{border-top:1px solid #ddd;margin-top:1em;padding-top:.5em}pre{background:#f7f7f7;padding:.5em;
white-space:pre-wrap;font-size:12px}.hit{background:#dfd}small{color:#666}"""


def _e(x: object) -> str:
    return html.escape("" if x is None else str(x))


def _table(header: list[str], rows: list[list[str]], raw: bool = False) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else _e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _badge(realism: str | None) -> str:
    return f'<span class="{_e(realism)}">{_e(realism)}</span>' if realism in ("real", "emulated") else ""


def _per_fault(doc: dict[str, Any]) -> str:
    realism: dict[str, set[str]] = defaultdict(set)
    for c in doc["cases"]:
        if c["fault_id"] and c["realism"]:
            realism[c["fault_id"]].add(c["realism"])
    parts = []
    for fault in doc["fault_types"]:
        rows = []
        for m in doc["methods"]:
            lv = ((m["scores"] or {}).get("per_fault") or {}).get(fault) or {}
            comp, node, met = lv.get("component") or {}, lv.get("node") or {}, lv.get("metric") or {}
            if not comp:
                continue
            ac = comp.get("ac", {})
            aci = comp.get("ac_ci") or {}
            rows.append([m["name"], str(comp.get("n")), fmt_ci((ac.get("1"), aci.get("1"))),
                         fmt_ci((ac.get("3"), aci.get("3"))), fmt_ci((ac.get("5"), aci.get("5"))),
                         fmt_ci((comp.get("avg"), comp.get("avg_ci"))), fmt(comp.get("chance_avg")), fmt(comp.get("lift")),
                         fmt((node.get("ac") or {}).get("1")), fmt((met.get("ac") or {}).get("1"))])
        rows.sort(key=lambda r: -(float(r[5].split()[0]) if r[5] != "–" else -1))
        badges = " ".join(_badge(r) for r in sorted(realism[fault]))
        parts.append(f"<h3>{_e(fault)} {badges}</h3>" + _table(
            ["method", "cases", "AC@1", "AC@3", "AC@5", "Avg@5", "chance Avg@5", "lift", "node AC@1", "metric AC@1"],
            rows))
    return "".join(parts) or "<p>No scored faulty case.</p>"


def _detection(doc: dict[str, Any]) -> str:
    rows = []
    for m in doc["methods"]:
        s = m["scores"] or {}
        for level in ("case_detection", "event_detection"):
            d = s.get(level)
            if d:
                ttd = s.get("time_to_detection") or {}
                ci = d.get("ci") or {}
                rows.append([m["name"], level.split("_")[0], str(d["n_faulty"]), str(d["n_clean"]),
                             *[fmt_ci((d[k], ci.get(k))) for k in ("precision", "recall", "f1", "fpr")],
                             fmt(ttd.get("median_s"))])
    if not rows:
        return "<p>No method returned verdicts or events.</p>"
    return _table(["method", "level", "faulty", "clean", "precision", "recall", "F1", "FPR", "median TTD s"], rows)


def _explanations(doc: dict[str, Any]) -> str:
    table = (doc.get("explanations") or {}).get("analyzer")
    if not table:
        return "<p>The Analyzer was not run.</p>"
    if "error" in table:
        return f"<p class=bad>{_e(table['error'])}</p>"
    keys = ["cases", "valid_format_rate", "first_try_valid_rate", "fault_class_accuracy", "category_accuracy",
            "component_accuracy", "rouge_l"]
    rows = [[fault, *[str(v[k]) if k == "cases" else fmt(v.get(k)) for k in keys]] for fault, v in table.items()]
    return _table(["fault", *keys], rows)


def _failures(doc: dict[str, Any]) -> str:
    rows = [[m["name"], str(n), err] for m in doc["methods"] for err, n in ((m["scores"] or {}).get("errors") or {}).items()]
    invalid = [[c["id"], c["status"], c["problem"] or ""] for c in doc["cases"] if c["status"] != "completed"]
    out = _table(["method", "runs", "status: reason"], rows) if rows else "<p>No failed run.</p>"
    if invalid:
        out += "<h3>Cases reported, not scored</h3>" + _table(["case", "status", "problem"], invalid)
    return out


def _not_scored(doc: dict[str, Any]) -> str:
    lines = not_scored_lines(doc)
    if not lines:
        return "<p>Every case was scored.</p>"
    return "<ul>" + "".join(f"<li>{_e(line[2:])}</li>" for line in lines) + "</ul>"


def _counts(doc: dict[str, Any]) -> str:
    counts = doc.get("counts") or {}
    rows = [[title, ", ".join(f"{k} {n}" for k, n in counts[key].items())]
            for key, title in (("by_fault", "fault"), ("by_target_kind", "target kind"), ("by_intensity", "intensity"),
                               ("by_split", "split"), ("by_status", "status")) if counts.get(key)]
    return _table(["cases per", "counts"], rows) if rows else ""


def _detectability(doc: dict[str, Any]) -> str:
    """AC@1 against intensity bin, per method (the bins of scores.json per_intensity)."""
    from chaosbench.report.plots import detectability_png

    bins = sorted({b for m in doc["methods"] for b in ((m["scores"] or {}).get("per_intensity") or {}) if b != "n/a"})
    if not bins:
        return "<p>No case carries an intensity (campaign runs do): no detectability curve.</p>"
    curves, rows = {}, []
    for m in doc["methods"]:
        per = (m["scores"] or {}).get("per_intensity") or {}
        if not per:
            continue
        pts = [(b, ((per.get(b) or {}).get("ac") or {}).get("1"), ((per.get(b) or {}).get("ac_ci") or {}).get("1"))
               for b in bins]
        curves[m["name"]] = pts
        rows.append([m["name"], *[f"{fmt_ci((v, ci))} (n={(per.get(b) or {}).get('n', 0)})" for b, v, ci in pts]])
    return f'<img alt="detectability" src="{detectability_png(curves)}">' + _table(["method", *bins], rows)


def _summary(doc: dict[str, Any]) -> str:
    run, cases = doc.get("run", {}), doc["cases"]
    faulty = sum(c["status"] == "completed" and bool(c["fault_id"]) for c in cases)
    clean = sum(c["status"] == "completed" and not c["fault_id"] for c in cases)
    return (f"<p>Dataset <code>{_e(doc['dataset'])}</code>, generated {_e(doc['generated_at'])}. "
            f"{faulty} faulty cases scored, {clean} clean, {len(cases) - faulty - clean} not scored. "
            f"{run.get('tasks')} method runs ({run.get('computed')} computed now, {run.get('reused')} reused) in "
            f"{run.get('wall_s')} s with {run.get('workers')} workers, split {_e(run.get('split', 'all'))}. AC@k "
            "and Avg@k follow RCAEval; a failed or timed-out run counts as a miss. [low, high]: 95 % bootstrap "
            "interval over cases (scipy.stats.bootstrap, percentile method, seeded). Labels: <span class=real>real</span> = the fault really degrades the "
            "local testbed; <span class=emulated>emulated</span> = the engine's device layer imitates a GPU effect.</p>")


def _body(doc: dict[str, Any], results_dir: Path) -> str:
    from chaosbench.report.cases import case_blocks

    header, rows = leaderboard_rows(doc)
    unavailable = [[m["name"], m["kind"], m["reason"]] for m in doc["methods"] if not m["available"]]
    parts = ["<h1>chaosbench evaluation</h1>", _summary(doc), "<h2>Leaderboard</h2>", _table(header, rows),
             "<h2>Unavailable methods</h2>",
             _table(["method", "kind", "reason"], unavailable) if unavailable else "<p>None.</p>",
             "<h2>Paired comparisons</h2>",
             _table(COMPARISON_HEADER, comparison_rows(doc)) if doc.get("comparisons") else "<p>None.</p>",
             "<h2>Cases not scored</h2>", _not_scored(doc), "<h2>Cases</h2>", _counts(doc),
             "<h2>Detectability: AC@1 against fault intensity</h2>", _detectability(doc),
             "<h2>Per fault type (component level)</h2>", _per_fault(doc),
             "<h2>Detection</h2>", _detection(doc),
             "<h2>Analyzer explanations</h2>", _explanations(doc), "<h2>Failures</h2>", _failures(doc),
             "<h2>Case details</h2>", case_blocks(doc, results_dir, MAX_CASE_PLOTS, MAX_EVENTS)]
    return "\n".join(parts)


def write_report(results_dir: Path) -> Path:
    """Write ``results_dir/report.html`` (self-contained) and the annotated traces; return the HTML path."""
    results_dir = Path(results_dir)
    doc = load_scores(results_dir)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>chaosbench report</title>"
            f"<style>{CSS}</style></head><body>{_body(doc, results_dir)}</body></html>\n")
    out = results_dir / "report.html"
    atomic_write_text(out, page)
    return out

