"""``chaosbench validate PATH...``: check scenario, suite and campaign files without running anything."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from chaosbench.errors import ScenarioInvalid


def validate_paths(paths: list[Path]) -> tuple[list[str], list[str]]:
    """(ok lines, problem lines) for every scenario/suite/campaign file named or found under ``paths``."""
    from chaosbench.campaign import Campaign, load_any
    from chaosbench.scenario import Suite, expand_suite, scenario_files

    ok: list[str] = []
    problems: list[str] = []
    missing = [p for p in paths if not p.exists()]
    problems.extend(f"{p}: no such file or directory" for p in missing)
    files = scenario_files([p for p in paths if p.exists()])
    if not files and not missing:
        problems.append(f"{', '.join(map(str, paths))}: no scenario files (*.yaml) found")
    for f in files:
        try:
            doc = load_any(f)
            if isinstance(doc, Campaign):
                ok.append(f"{f}: Campaign {doc.metadata.name} ({doc.spec.count} cases)")
            elif isinstance(doc, Suite):
                runs = expand_suite(doc, f)
                ok.append(f"{f}: Suite {doc.metadata.name} ({len(runs)} runs)")
            else:
                ok.append(f"{f}: Scenario {doc.metadata.name} ({len(doc.spec.faults)} fault(s))")
        except ScenarioInvalid as exc:
            problems.extend(exc.problems)
    return ok, problems


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(
        paths: list[Path] = typer.Argument(..., help="Scenario, suite or campaign files or directories (recursive)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print problems."),
    ) -> None:
        """Validate scenarios, suites and campaigns: one line per problem (file: path.in.document: reason), exit 2."""
        ok, problems = validate_paths(paths)
        console = Console(highlight=False, soft_wrap=True)
        if not quiet:
            for line in ok:
                console.print(f"[green]ok[/] {line}")
        if problems:
            raise ScenarioInvalid(problems)
        console.print(f"[green]{len(ok)} file(s) valid[/]")
