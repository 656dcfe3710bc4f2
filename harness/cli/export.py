"""``chaosbench export RUN --out FILE.tar.gz``: one archive of a run's blind cases, labels and dataset card."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        run: Path = typer.Argument(..., help="A run directory (cases/ + labels.jsonl)."),
        out: Path = typer.Option(..., "--out", help="The archive to write (FILE.tar.gz)."),
    ) -> None:
        """Pack blind cases + labels.jsonl + labels/ + dataset card + plan.json + run.json; `chaosbench eval
        FILE.tar.gz` reads it directly."""
        from chaosbench.eval.export import export_run

        path, n = export_run(run, out)
        typer.echo(f"{path} ({n} cases)")
