"""``chaosbench eval DATASET``: run RCA methods on every case of a run (or an exported archive of one, or older case
directories), score with confidence intervals, write leaderboards."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        dataset_dir: Path = typer.Argument(..., help="A run directory (cases/ + labels.jsonl), a FILE.tar.gz written "
                                           "by `chaosbench export`, or older case directories (chaosbench or RCAEval "
                                           "layout) at or below."),
        methods: list[str] = typer.Option(None, "--methods", "-m", help="Method names, groups (fast, all, slow, "
                                          "trivial, kat, rcaeval) or module:function plugins; repeat or comma-separate. "
                                          "Default: fast."),
        out: Path = typer.Option(None, "--out", help="Results directory (default <run>/eval, or "
                                 "results/eval/<dataset name>)."),
        split: str = typer.Option("all", "--split", help="dev, test or all (a run's labels.jsonl assigns them). "
                                  "Tune on dev; score test once per release."),
        workers: int = typer.Option(2, "--workers", "-w", help="Parallel processes (0: in this process, no timeout)."),
        ray: str = typer.Option(None, "--ray", help="Ray cluster address (auto, host:port, ray://..., local)."),
        timeout: float = typer.Option(300.0, "--timeout", help="Seconds per (case, method) before it is killed."),
        force: bool = typer.Option(False, "--force", help="Recompute results that already exist."),
        report: bool = typer.Option(True, "--report/--no-report", help="Also write report.html."),
    ) -> None:
        """Evaluate every case of DATASET against blind copies; resumable (existing answers are reused)."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from chaosbench.errors import InputInvalid
        from chaosbench.eval.discover import SPLITS, discover
        from chaosbench.eval.methods import select
        from chaosbench.evaluate import evaluate, is_archive

        select(methods)  # bad names and plugins fail here, in one line, before any display
        if split not in SPLITS:
            raise InputInvalid(f"--split must be one of {', '.join(SPLITS)} (got {split!r})")
        if not is_archive(dataset_dir):
            discover(dataset_dir, split)
        console = Console(stderr=True)
        progress = Progress(TextColumn("{task.description:<36}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console)
        with progress:
            bar = progress.add_task("eval", total=None)

            def on_start(total: int, todo: int) -> None:
                progress.update(bar, total=todo, description=f"eval ({total - todo} of {total} reused)")

            def on_done(task, status: str) -> None:
                progress.update(bar, advance=1, description=f"{task.method.name} {status}"[:36])

            results = evaluate(dataset_dir, out, methods, workers, timeout_s=timeout, ray_address=ray, force=force,
                               split=split, report=report, on_start=on_start, on_done=on_done)
        console.print(f"leaderboard: {results / 'leaderboard.md'}")
        if report:
            console.print(f"report: {results / 'report.html'}")
        typer.echo(str(results))
