"""``chaosbench scenarios list``: the scenarios, suites and campaigns under a directory."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from chaosbench.errors import ScenarioInvalid
from chaosbench.types import format_duration


def scenario_records(root: Path) -> list[dict]:
    from chaosbench.campaign import Campaign, load_any
    from chaosbench.scenario import Suite, scenario_files, suite_scenario_paths

    records = []
    for f in scenario_files([root]):
        try:
            doc = load_any(f)
        except ScenarioInvalid as exc:
            records.append({"file": str(f), "kind": "invalid", "name": None, "error": exc.problems[0]})
            continue
        rec = {"file": str(f), "kind": doc.kind, "name": doc.metadata.name, "description": doc.metadata.description}
        if isinstance(doc, Campaign):
            rec["count"], rec["seed"] = doc.spec.count, doc.spec.seed
        elif isinstance(doc, Suite):
            rec["scenarios"] = [p.stem for p in suite_scenario_paths(doc, f)]
            rec["repetitions"] = doc.spec.repetitions
        else:
            spec = doc.spec
            rec["faults"] = [{"id": s.id, "target": s.target.component} for s in spec.faults]
            rec["backend"] = spec.deployment.backend
            rec["engine"] = spec.deployment.engine
            rec["duration_s"] = spec.workload.duration
        records.append(rec)
    return records


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Scenarios and suites.", no_args_is_help=True)

    @group.command("list")
    def list_(
        path: Path = typer.Option(Path("scenarios"), "--path", help="Directory to search."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """List the scenarios and suites under PATH (default: scenarios/)."""
        if not path.is_dir():
            raise ScenarioInvalid([f"{path}: not a directory"])
        records = scenario_records(path)
        if as_json:
            typer.echo(json.dumps(records, indent=2))
            return
        table = Table(title=f"scenarios in {path}")
        for col in ("name", "kind", "faults / scenarios", "load", "file"):
            table.add_column(col, overflow="fold")
        for r in records:
            if r["kind"] == "Campaign":
                what, load = f"{r['count']} sampled cases, seed {r['seed']}", ""
            elif r["kind"] == "Suite":
                what = f"{', '.join(r['scenarios'])} x{r['repetitions']}"
                load = ""
            elif r["kind"] == "Scenario":
                what = ", ".join(f"{f['id']}@{f['target']}" for f in r["faults"]) or "(clean)"
                load = format_duration(r["duration_s"])
            else:
                what, load = f"[red]{r['error']}[/]", ""
            table.add_row(r["name"] or "-", r["kind"], what, load, r["file"])
        Console(width=160).print(table)

    app.add_typer(group, name="scenarios")
