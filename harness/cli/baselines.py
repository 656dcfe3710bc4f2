"""``chaosbench methods`` (alias ``baselines``): every RCA method, available or not and why."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    def methods(
        check: bool = typer.Option(True, "--check/--no-check", help="Import each method to check it (slower)."),
    ) -> None:
        """List every method: kind, speed, inputs, and available / unavailable with the reason."""
        from chaosbench.eval.methods import catalogue

        typer.echo(f"{'method':<20} {'kind':<8} {'speed':<5} {'needs':<24} status")
        for m in catalogue().values():
            ok, why = m.status() if check else (True, "not checked")
            status = ("available" if why == "ok" else f"available ({why})") if ok else f"unavailable: {why}"
            typer.echo(f"{m.name:<20} {m.kind:<8} {m.speed:<5} {','.join(m.needs) or '-':<24} {status}")

    app.command("methods")(methods)
    app.command("baselines", hidden=True)(methods)
