"""``chaosbench campaign plan FILE``: the cases a campaign draws, without running anything."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def _params(params: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Campaigns: cases sampled from a seed.", no_args_is_help=True)

    @group.command("plan")
    def plan_(
        path: Path = typer.Argument(..., help="A campaign YAML file."),
        as_json: bool = typer.Option(False, "--json", help="The plan as a JSON list (one object per case)."),
    ) -> None:
        """Print the campaign's draw: per case its split, faults (target, parameters, window), topology and load."""
        from chaosbench.campaign import load_campaign, plan

        campaign = load_campaign(path)
        cases = plan(campaign)
        if as_json:
            typer.echo(json.dumps([c.to_json() for c in cases], indent=2))
            return
        spec = campaign.spec
        table = Table(title=f"campaign {campaign.metadata.name}: seed {spec.seed}, {len(cases)} cases")
        for col in ("#", "split", "fault @ target", "params", "window", "intensity", "topology", "load"):
            table.add_column(col, overflow="fold")
        for c in cases:
            faults = "\n".join(f"{f.id} @ {f.component}" for f in c.faults) or "[dim](clean)[/]"
            params = "\n".join(_params(f.params) or "-" for f in c.faults)
            window = "\n".join(f"{f.start:g}s +{f.duration:g}s" for f in c.faults) or f"{c.onset:g}s +{c.duration:g}s"
            w = c.workload
            load = " ".join(f"{k}={w[k]}" for k in ("users", "qps", "arrival") if k in w)
            intensity = "" if c.intensity is None else f"{c.intensity:.2f}"
            table.add_row(str(c.index), c.split, faults, params, window, intensity, c.topology, load)
        console = Console(width=200, highlight=False)
        console.print(table)
        kinds = Counter(c.faults[0].id if c.faults else "clean" for c in cases)
        splits = Counter(c.split for c in cases)
        compound = sum(1 for c in cases if len(c.faults) > 1)
        console.print(f"{len(cases)} cases: {kinds['clean']} clean, {len(cases) - kinds['clean']} faulty "
                      f"({compound} compound); dev {splits['dev']}, test {splits['test']}")
        console.print(", ".join(f"{k} {v}" for k, v in sorted(kinds.items()) if k != "clean"))

    app.add_typer(group, name="campaign")
