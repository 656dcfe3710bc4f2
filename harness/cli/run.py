"""``chaosbench run SCENARIO|SUITE [--out DIR] [--seed N]``: deploy, load, inject, collect, tear down."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def _progress_ui():
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                    TimeElapsedColumn(), console=console, transient=False), console


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        path: Path = typer.Argument(..., help="A scenario or suite YAML file."),
        out: Path = typer.Option(Path("results"), "--out", help="Results root; cases go to <out>/<run-id>/cases/."),
        seed: int = typer.Option(None, "--seed", help="Workload seed (default: the scenario's)."),
    ) -> None:
        """Run a scenario (one case) or a suite (every scenario x repetition x seed) on its backend."""
        from harness.backends.local.preflight import is_root, no_root_message
        from harness.runner import run_scenario, run_suite
        from harness.scenario import Suite, load_document

        doc = load_document(path)
        progress, console = _progress_ui()
        if not is_root():
            console.print(f"[yellow]warning:[/] {no_root_message()}")
        with progress:
            phase = progress.add_task("starting", total=1.0)

            def on_phase(name: str, fraction: float | None) -> None:
                progress.update(phase, description=name, **({"completed": fraction} if fraction is not None else {}))

            if isinstance(doc, Suite):
                overall = progress.add_task(f"suite {doc.metadata.name}", total=None)

                def on_case(i: int, n: int, name: str) -> None:
                    progress.update(overall, total=n, completed=i, description=f"suite: {name} ({i + 1}/{n})")
                    progress.update(phase, completed=0)

                cases = run_suite(doc, out, suite_path=path, progress=on_phase, on_case=on_case)
                progress.update(overall, completed=len(cases))
            else:
                name = doc.metadata.name
                case_dir = out / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}" / "cases" / f"{name}-r0"
                cases = [run_scenario(doc, case_dir, seed, progress=on_phase)]
        for c in cases:
            console.print(f"case: {c}")
