"""``chaosbench report RESULTS_DIR``: write the self-contained report.html of an evaluation."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(results_dir: Path = typer.Argument(..., help="A directory written by `chaosbench eval`.")) -> None:
        """Write RESULTS_DIR/report.html (leaderboard, per-fault tables, per-case timelines, annotated traces)."""
        from chaosbench.report import write_report

        typer.echo(str(write_report(results_dir)))
