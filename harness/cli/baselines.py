"""``chaosbench methods`` (alias ``baselines``): every RCA method, available or not and why."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    def methods(
        check: bool = typer.Option(True, "--check/--no-check", help="Import each method to check it (slower)."),
    ) -> None:
        """List every method: kind, speed, inputs, and available / unavailable with the reason."""
        from rich.console import Console
        from rich.table import Table

        from harness.eval.methods import catalogue

        table = Table("method", "kind", "speed", "needs", "status")
        for m in catalogue().values():
            ok, why = m.status() if check else (True, "not checked")
            status = "available" if ok else f"[red]unavailable[/]: {why}"
            table.add_row(m.name, m.kind, m.speed, ",".join(m.needs), status)
        Console(soft_wrap=True).print(table)

    app.command("methods")(methods)
    app.command("baselines", hidden=True)(methods)
