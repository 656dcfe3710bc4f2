"""The per-case blocks of report.html: timeline, what each method blamed, events, chain, annotated trace."""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from chaosbench.detectors.api import AnomalousEvent, Result


def _e(x: object) -> str:
    return html.escape("" if x is None else str(x))


def _results(results_dir: Path, case_id: str) -> dict[str, Result]:
    """Each method's answer for the case: ``<results>/detectors/<method>/<case_id>.json``."""
    out = {}
    for f in sorted((results_dir / "detectors").glob(f"*/{case_id}.json")):
        try:
            out[f.parent.name] = Result.from_json(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError, TypeError):
            continue
    return out


def _figure(case: dict[str, Any], answer_metrics: list[str]) -> str:
    import pandas as pd

    from chaosbench.report.plots import timeline_png

    path = Path(case["path"])
    try:
        df = pd.read_csv(path / "data.csv").apply(pd.to_numeric, errors="coerce").dropna(subset=["time"])
        inject = float((path / "inject_time.txt").read_text().strip())
    except (OSError, ValueError, pd.errors.ParserError, KeyError) as exc:
        return f"<p class=bad>no figure: {_e(exc)}</p>"
    comp = case.get("component")
    metrics = answer_metrics or [c for c in df.columns if comp and c.partition("_")[0] == comp]
    sli = "ingress_latency" if "ingress_latency" in df else None
    title = f"{case['id']}: {case.get('fault_id') or 'clean'} on {comp or '-'}"
    uri = timeline_png(df, inject, case.get("end"), sli, metrics, title)
    return f'<img alt="timeline" src="{uri}">'


def _blame_table(outcomes: list[dict[str, Any]], answer: str | None) -> str:
    rows = []
    for o in outcomes:
        top = o["ranking"][:3]
        cells = " ".join(f'<span class="{"hit" if c == answer else ""}">{_e(c)}</span>' for c in top)
        pos = o["ranking"].index(answer) + 1 if answer in o["ranking"] else "–"
        status = _e(o["status"]) if o["status"] == "ok" else f'<span class=bad>{_e(o["status"])}: {_e(o["error"])}</span>'
        rows.append(f"<tr><td>{_e(o['method'])}</td><td>{status}</td><td>{cells}</td><td>{pos}</td>"
                    f"<td>{o['runtime_s']:.2f}</td></tr>")
    return ("<table><tr><th>method</th><th>status</th><th>top 3</th><th>rank of truth</th><th>s</th></tr>"
            + "".join(rows) + "</table>")


def _events(results: dict[str, Result], limit: int) -> str:
    rows = []
    for method, r in results.items():
        for ev in sorted(r.events, key=lambda e: -e.score)[:limit]:
            rows.append(f"<tr><td>{_e(method)}</td><td>{_e(ev.component)}</td><td>{_e(ev.name)}</td>"
                        f"<td>{ev.dur:.0f}</td><td>{ev.expected_dur:.0f}</td><td>{ev.score:.2f}</td>"
                        f"<td><small>{_e(ev.path)}</small></td></tr>")
    if not rows:
        return ""
    return ("<h4>Anomalous events</h4><table><tr><th>method</th><th>component</th><th>event</th><th>dur µs</th>"
            "<th>expected µs</th><th>score</th><th>path</th></tr>" + "".join(rows) + "</table>")


def _chains(results: dict[str, Result]) -> str:
    return "".join(f"<h4>{_e(m)} explanation</h4><pre>{_e(r.explanation)}</pre>"
                   for m, r in results.items() if r.explanation)


def _trace_link(case: dict[str, Any], results: dict[str, Result], results_dir: Path) -> str:
    from chaosbench.report.chrome import annotate

    tdir = Path(case["path"]) / "traces"
    files = sorted(p for p in tdir.glob("*") if p.name.endswith((".json", ".json.gz"))) if tdir.is_dir() else []
    if not files:
        return ""
    marks: list[tuple[str, AnomalousEvent]] = [(m, ev) for m, r in results.items() for ev in r.events]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", case["id"]) + ".annotated.json.gz"
    annotate(files, marks, results_dir / "traces" / name)
    return (f'<p>Annotated Chrome trace ({len(files)} ranks, {len(marks)} anomalies marked): '
            f'<a href="traces/{_e(name)}">traces/{_e(name)}</a> (open in https://ui.perfetto.dev)</p>')


def case_blocks(doc: dict[str, Any], results_dir: Path, max_plots: int, max_events: int) -> str:
    by_case: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for o in doc["outcomes"]:
        by_case[o["case"]].append(o)
    parts = []
    for i, case in enumerate(doc["cases"]):
        realism = case.get("realism")
        badge = f'<span class="{_e(realism)}">{_e(realism)}</span>' if realism in ("real", "emulated") else ""
        head = (f"<div class=case><h3>{_e(case['id'])} {badge}</h3><p>fault <b>{_e(case.get('fault_id') or 'none (clean)')}"
                f"</b> on <b>{_e(case.get('component') or '-')}</b>; status {_e(case['status'])}"
                + (f' <span class=bad>({_e(case["problem"])})</span>' if case.get("problem") else "") + "</p>")
        if case["status"] == "invalid":
            parts.append(head + "</div>")
            continue
        outcomes = by_case.get(case["id"], [])
        answer_metrics = outcomes[0]["answer_metrics"] if outcomes else []
        results = _results(results_dir, case.get("case_id") or case["id"])
        figure = _figure(case, answer_metrics) if i < max_plots else "<p><small>figure skipped (report limit)</small></p>"
        parts.append(head + figure + _blame_table(outcomes, case.get("component")) + _events(results, max_events)
                     + _chains(results) + _trace_link(case, results, results_dir) + "</div>")
    return "\n".join(parts)
