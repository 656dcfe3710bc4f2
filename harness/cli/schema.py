"""``chaosbench schema``: JSON Schema of the scenario format, for editors."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("schema")
    def schema(out: Path | None = typer.Option(None, "--out", "-o", help="Write to a file instead of stdout.")) -> None:
        """Print the JSON Schema of scenario and suite files (generated from the models)."""
        from chaosbench.scenario import json_schema

        text = json.dumps(json_schema(), indent=2)
        if out is None:
            typer.echo(text)
        else:
            out.write_text(text + "\n")
            typer.echo(f"wrote {out}")
