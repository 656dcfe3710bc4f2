"""``chaosbench cleanup [PATH]``: undo what a crashed run left behind.

Rolls back faults still recorded in fault journals, then stops every leftover local
testbed found under PATH (its ``testbed.json`` state file: processes by PID, network
namespaces, bridge, cgroups). PATH defaults to ``results/``.
"""

from __future__ import annotations

from pathlib import Path

import typer


def find_states(root: Path) -> list[Path]:
    from chaosbench.backends.local.plan import STATE_FILE

    if root.is_file():
        return [root]
    if (root / STATE_FILE).is_file():
        return [root / STATE_FILE]
    return sorted(p for p in root.rglob(STATE_FILE) if p.is_file())


def register(app: typer.Typer) -> None:
    @app.command("cleanup")
    def cleanup(path: Path = typer.Argument(Path("results"), help="A run directory, a state file or a results root.")) -> None:
        """Stop leftover testbeds and roll back leftover faults (idempotent)."""
        from rich.console import Console

        from chaosbench.backends.local.cleanup import cleanup as clean_testbed
        from chaosbench.backends.local.cleanup import leftovers
        from chaosbench.backends.local.plan import read_plan
        from chaosbench.errors import InputInvalid

        console = Console(stderr=True)
        if not path.exists():
            raise InputInvalid(f"{path}: no such file or directory")
        try:
            from chaosbench.faults.journal import replay_fault_journals

            n = replay_fault_journals(path)
            if n:
                console.print(f"rolled back {n} fault(s)")
        except ImportError:
            pass
        cleaned = 0
        for state in find_states(path):
            plan = read_plan(state)
            if leftovers(plan).empty():
                continue
            left = clean_testbed(plan)
            cleaned += 1
            status = "clean" if left.empty() else f"LEFT: {left.describe()}"
            console.print(f"testbed {plan.run_id} ({state.parent}): {status}")
        if not cleaned:
            console.print("nothing to clean")
