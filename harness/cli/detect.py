"""``chaosbench detect``: KAT Outpost on any trace directory, and the lambda sweep over cases."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from chaosbench.errors import InputInvalid

detect_app = typer.Typer(help="Trace anomaly detection (KAT Outpost).", no_args_is_help=True)


def _trace_input(path: Path, inject_time: float | None) -> tuple[Path, float | None]:
    """A case directory, or the traces/ directory of one, gives its traces and its injection time (the
    split between each worker's healthy history and the window to test); anything else is used as is."""
    case = None
    if (path / "manifest.json").is_file() and (path / "traces").is_dir():
        case = path
    elif path.is_dir() and path.name == "traces" and (path.parent / "manifest.json").is_file():
        case = path.parent
    if case is None:
        return path, inject_time
    from chaosbench.case import CaseView

    split = inject_time if inject_time is not None else CaseView(case).inject_time
    return case / "traces", split


def _rank_node(topology: Path) -> dict[str, str]:
    try:
        return dict(json.loads(topology.read_text()).get("rank_node", {}))
    except (OSError, ValueError, AttributeError):
        return {}


@detect_app.command("outpost")
def outpost_cmd(
    path: Path = typer.Argument(..., help="Trace file, directory of per-rank traces, or a case directory."),
    worker_key: str = typer.Option("pid", "--worker-key",
                                   help="Event field that identifies a worker: pid, tid, cat, file."),
    lam: float = typer.Option(4.0, "--lambda", help="Anomaly threshold on the robust z-score."),
    inject_time: float = typer.Option(None, "--inject-time",
                                      help="Unix s; events before it are each worker's healthy history."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    top: int = typer.Option(10, "--top", help="Rows of ranking and events to print (text output)."),
) -> None:
    """Detect anomalous trace events across parallel workers."""
    from chaosbench.detectors.outpost import outpost

    if lam <= 0:
        raise InputInvalid(f"--lambda must be > 0 (got {lam})")
    source, split = _trace_input(path, inject_time)
    rep = outpost(source, worker_key=worker_key, lam=lam, split=split)
    topology = source.parent / "topology.json"  # a case: name the node when all its ranks are to blame
    if source.name == "traces" and (source.parent / "manifest.json").is_file() and topology.is_file():
        from chaosbench.detectors.outpost import node_first

        rep = node_first(rep, _rank_node(topology))
    if as_json:
        obj = rep.to_json()
        obj["ranking"] = [{k: r[k] for k in ("worker", "worker_name", "component", "thread", "score", "events",
                                             "cause")} for r in obj["ranking"]]
        typer.echo(json.dumps(obj, separators=(",", ":")))
        return
    typer.echo(f"{'ANOMALOUS' if rep.anomalous else 'no anomaly'}: {rep.n_events} events, "
               f"{rep.n_anomalous} anomalous, {rep.n_localized} localized, lambda {rep.lam:g}, {rep.runtime_s:.2f} s")
    for r in rep.ranking[:top]:
        typer.echo(f"  {r.score:10.1f}  {r.component:<12} worker={r.worker} ({r.worker_name}) thread={r.thread} "
                   f"events={r.events}")
    for e in rep.events[:top]:
        typer.echo(f"  {e.component:<12} {e.name[:60]:<60} step={e.step} dur={e.dur:.1f}us "
                   f"expected={e.expected_dur:.1f}us z={e.score:.1f}")


def _lambdas(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise InputInvalid(f"--lambdas: expected numbers separated by commas (got {text!r})") from exc
    if not values or any(v <= 0 for v in values):
        raise InputInvalid(f"--lambdas: expected positive numbers (got {text!r})")
    return values


def _fmt(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.3f}"


@detect_app.command("sweep")
def sweep_cmd(
    cases_dir: Path = typer.Argument(..., help="Directory holding case directories (with traces/)."),
    lambdas: str = typer.Option("2,3,4,5", "--lambdas", help="Comma-separated thresholds."),
    worker_key: str = typer.Option("pid", "--worker-key"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Precision/recall curve of Outpost over a set of cases, per lambda (event and case level)."""
    from chaosbench.detectors.outpost.sweep import sweep

    if not cases_dir.is_dir():
        raise InputInvalid(f"{cases_dir}: not a directory")
    out = sweep(cases_dir, _lambdas(lambdas), worker_key)
    if as_json:
        typer.echo(json.dumps(out, separators=(",", ":"), default=str))
        return
    if all(r.get("cases", 0) == 0 for r in out["lambdas"]):
        raise InputInvalid(f"{cases_dir}: no case with traces found")
    typer.echo("lambda  cases | event P   R     F1    FPR   | case P    R     F1    FPR   | TTD s")
    for r in out["lambdas"]:
        e, c = r["event"], r["case"]
        typer.echo(f"{r['lambda']:6g}  {r['cases']:5d} | {_fmt(e['precision'])} {_fmt(e['recall'])} {_fmt(e['f1'])} "
                   f"{_fmt(e['fpr'])} | {_fmt(c['precision'])} {_fmt(c['recall'])} {_fmt(c['f1'])} {_fmt(c['fpr'])} "
                   f"| {_fmt(c['ttd_median_s'])}")
        for fault, m in r["per_fault"].items():
            ev, ca = m["event"], m["case"]
            typer.echo(f"          {fault:<24} n={m['cases']:<3} event P={_fmt(ev['precision'])} "
                       f"R={_fmt(ev['recall'])} FPR={_fmt(ev['fpr'])}  "
                       f"case R={_fmt(ca['recall'])} FPR={_fmt(ca['fpr'])}")
    if out["skipped"]:
        typer.echo(f"skipped (no traces): {', '.join(out['skipped'])}")


def register(app: typer.Typer) -> None:
    app.add_typer(detect_app, name="detect")
