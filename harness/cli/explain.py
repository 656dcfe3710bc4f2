"""``chaosbench explain CASE_DIR [--backend rules|openai] [--json]``: KAT Analyzer's causal chain."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def explain_command(
    case_dir: Path = typer.Argument(..., help="A case directory (with manifest.json).", show_default=False),
    backend: str = typer.Option("rules", "--backend", "-b", help="rules (offline, default) or openai "
                                "(CHAOSBENCH_LLM_BASE_URL, CHAOSBENCH_LLM_MODEL, CHAOSBENCH_LLM_API_KEY)."),
    as_json: bool = typer.Option(False, "--json", help="Print the detector Result as JSON."),
) -> None:
    """Explain a case: symptom -> effects -> root cause, with the fault class and a confidence."""
    from chaosbench.case import CaseView
    from chaosbench.detectors.analyzer import explain
    from chaosbench.errors import ChaosbenchError

    result = explain(CaseView(case_dir), backend)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, default=str))
    if result.status != "ok":
        raise ChaosbenchError(result.error or f"analyzer {result.status}")
    if not as_json:
        typer.echo(result.explanation or "")


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_command)
