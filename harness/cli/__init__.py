"""The ``chaosbench`` command: a thin typer app over the library.

Each subcommand lives in its own module with a ``register(app)`` function. Expected
failures are ``chaosbench.errors.ChaosbenchError``: printed as one ``error:`` line per
problem, exit code from the error type; the traceback only with ``--debug``.
"""

from __future__ import annotations

import importlib
import sys
import traceback

import typer
from rich.console import Console

from chaosbench.errors import ChaosbenchError, ScenarioInvalid

# Subcommand modules, in help order. A module that is not there (yet) is skipped.
SUBCOMMANDS = (
    "scenarios",
    "faults",
    "validate",
    "schema",
    "run",
    "campaign",
    "cleanup",
    "detect",
    "explain",
    "eval",
    "export",
    "report",
    "baselines",
    "make_model",
)

app = typer.Typer(
    name="chaosbench",
    help="Chaos-engineering benchmark for root-cause analysis of distributed LLM inference.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
_options = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _options["debug"] = debug


def _register_all() -> None:
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"chaosbench.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"chaosbench.cli.{name}":
                continue
            raise
        module.register(app)


_register_all()


def report_error(exc: ChaosbenchError) -> None:
    lines = exc.problems if isinstance(exc, ScenarioInvalid) else (str(exc) or type(exc).__name__).splitlines()
    for line in lines:
        err_console.print(f"[bold red]error:[/] {line}", markup=True, highlight=False)


def recover_leftover_faults() -> None:
    """Roll back faults that a crashed harness left injected (its recovery journal), before anything else runs."""
    from chaosbench.faults.journal import replay_fault_journals

    try:
        recovered = replay_fault_journals()
    except Exception as exc:  # noqa: BLE001 - never block the CLI; `chaosbench cleanup` reports it in full
        err_console.print(f"[yellow]warning:[/] could not replay fault recovery journals: {exc}")
        return
    if recovered:
        err_console.print(f"[yellow]recovered {recovered} fault(s) left injected by an earlier, crashed run[/]")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns (and exits with) the process exit code."""
    code = 0
    try:
        recover_leftover_faults()
        result = app(args=argv, standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except ChaosbenchError as exc:
        report_error(exc)
        if _options["debug"]:
            traceback.print_exc()
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("[bold red]error:[/] interrupted")
        code = 130
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.TyperException as exc:  # usage errors (typer vendors click: no public base class)
        exc.show()  # type: ignore[attr-defined]
        code = getattr(exc, "exit_code", 2)
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        first = (str(exc).splitlines() or [""])[0]
        err_console.print(f"[bold red]error:[/] internal error: {type(exc).__name__}: {first} (run with --debug)")
        if _options["debug"]:
            traceback.print_exc()
        code = 1
    if argv is None:
        sys.exit(code)
    return code
