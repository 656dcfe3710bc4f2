"""``chaosbench faults``: the fault catalog (shipped faults, then installed plugins)."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table


def catalog_records() -> list[dict]:
    from chaosbench.faults.catalog import fault_specs

    records = []
    for spec in fault_specs():
        params = {}
        for name, field in spec.params.model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            params[name] = {
                "type": getattr(field.annotation, "__name__", str(field.annotation)),
                "default": field.default,
                "min": extra.get("minimum"),
                "max": extra.get("maximum"),
                "description": field.description or "",
            }
        records.append(
            {
                "id": spec.id,
                "class": spec.fault_class,
                "version": spec.version,
                "description": spec.description,
                "target": spec.target,
                "targets": list(spec.target_kinds),
                "params": params,
                "cluster_mechanism": spec.cluster_mechanism,
                "local_mechanism": spec.local_mechanism,
                "local": spec.local_realism,
                "verify_signal": spec.verify_signal,
                "recovery": spec.recovery,
                "seen_in": list(spec.seen_in),
            }
        )
    return records


def _param_text(params: dict) -> str:
    parts = []
    for name, p in params.items():
        bounds = f" [{p['min']:g}..{p['max']:g}]" if p["min"] is not None else ""
        parts.append(f"{name}={p['default']}{bounds}")
    return "\n".join(parts) or "-"


def register(app: typer.Typer) -> None:
    @app.command("faults")
    def faults(as_json: bool = typer.Option(False, "--json", help="Machine-readable catalog.")) -> None:
        """The faults (shipped and plugins): class, targets, parameters, mechanisms, real|emulated, verify signal."""
        records = catalog_records()
        if as_json:
            typer.echo(json.dumps(records, indent=2))
            return
        table = Table(title="chaosbench fault catalog", show_lines=True)
        for col in ("id", "class", "targets", "params (default \\[bounds])", "local mechanism", "local", "verify signal"):
            table.add_column(col, overflow="fold")
        for r in records:
            table.add_row(
                r["id"], r["class"], "\n".join(r["targets"]), _param_text(r["params"]), r["local_mechanism"],
                r["local"], r["verify_signal"],
            )
        Console(width=200).print(table)
