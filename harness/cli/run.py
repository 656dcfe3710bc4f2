"""``chaosbench run SCENARIO|SUITE``: deploy, load, inject, collect, tear down; a suite then evaluates and reports."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from harness.errors import InputInvalid


def _progress_ui():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(TextColumn("{task.description:<36}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False), console


def _with_overrides(doc, path: Path, backend: str | None, repetitions: int | None):
    """Apply command-line overrides through the same loader as the file itself (so they are validated too)."""
    from harness.scenario import Suite, load_scenario, parse_document

    if isinstance(doc, Suite):
        spec = doc.spec
        if repetitions is not None:
            seeds = spec.seed_list()
            spec = spec.model_copy(update={"repetitions": repetitions,
                                           "seeds": (seeds + list(range(len(seeds) + 1, repetitions + 1)))[:repetitions]})
        if backend is not None:
            over = dict(spec.overrides)
            over["deployment"] = {**over.get("deployment", {}), "backend": backend}
            spec = spec.model_copy(update={"overrides": over})
        return doc.model_copy(update={"spec": spec})
    if repetitions is not None:
        raise InputInvalid("--repetitions applies to suites only")
    return load_scenario(path, {"deployment": {"backend": backend}}) if backend else doc


def _dry_run(doc, path: Path, out: Path) -> None:
    from harness.backends.k8s import dry_run
    from harness.scenario import Suite, expand_suite

    scenarios = [s for s, rep, _ in expand_suite(doc, path) if rep == 0] if isinstance(doc, Suite) else [doc]
    root = out / f"{time.strftime('%Y%m%d-%H%M%S')}-{doc.metadata.name}-dry-run"
    for scenario in scenarios:
        if scenario.spec.deployment.backend != "k8s":
            raise InputInvalid("--dry-run renders the k8s backend: add --backend k8s")
        typer.echo(f"rendered {scenario.metadata.name}: {dry_run(scenario, root / scenario.metadata.name)}")


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        path: Path = typer.Argument(..., help="A scenario or suite YAML file."),
        out: Path = typer.Option(Path("results"), "--out", help="Results root; cases go to <out>/<run-id>/cases/."),
        seed: int = typer.Option(None, "--seed", help="Workload seed of a single scenario (default: the scenario's)."),
        repetitions: int = typer.Option(None, "--repetitions", min=1, help="Override a suite's repetitions."),
        backend: str = typer.Option(None, "--backend", help="Override deployment.backend: local or k8s."),
        dry_run: bool = typer.Option(False, "--dry-run", help="k8s: render every manifest and variable, touch nothing."),
        evaluate: bool = typer.Option(True, "--eval/--no-eval", help="After a suite: evaluate and write the report."),
        workers: int = typer.Option(2, "--workers", min=0, help="Evaluation processes."),
    ) -> None:
        """Run a scenario (one case) or a suite (every scenario x repetition x seed, then eval and report)."""
        from harness.scenario import Suite, load_document

        if backend not in (None, "local", "k8s"):
            raise InputInvalid(f"--backend: must be local or k8s, got {backend!r}")
        doc = _with_overrides(load_document(path), path, backend, repetitions)
        if dry_run:
            _dry_run(doc, path, out)
            return
        _run(doc, path, out, seed, evaluate, workers, isinstance(doc, Suite), local=backend != "k8s")


def _run(doc, path: Path, out: Path, seed: int | None, evaluate: bool, workers: int, is_suite: bool,
         local: bool = True) -> None:
    from harness.backends.local.preflight import is_root, no_root_message
    from harness.benchmark import evaluate_and_report, suite_methods
    from harness.runner import run_scenario, run_suite

    progress, console = _progress_ui()
    if local and not is_root():  # the fault mechanisms of the local testbed need root; a cluster's do not
        console.print(f"[yellow]warning:[/] {no_root_message()}")
    with progress:
        phase = progress.add_task("starting", total=1.0)

        def on_phase(name: str, fraction: float | None) -> None:
            progress.update(phase, description=name, **({"completed": fraction} if fraction is not None else {}))

        if not is_suite:
            name = doc.metadata.name
            case_dir = out / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}" / "cases" / f"{name}-r0"
            cases = [run_scenario(doc, case_dir, seed, progress=on_phase)]
        else:
            overall = progress.add_task(f"suite {doc.metadata.name}", total=None)

            def on_case(i: int, n: int, name: str) -> None:
                progress.update(overall, total=n, completed=i, description=f"suite: {name} ({i + 1}/{n})")
                progress.update(phase, completed=0)

            cases = run_suite(doc, out, suite_path=path, progress=on_phase, on_case=on_case)
            progress.update(overall, completed=len(cases))
            if evaluate and cases:
                scoring = progress.add_task("evaluating methods", total=None)
                eval_dir, report = evaluate_and_report(
                    cases[0].parent, suite_methods(doc, path), workers,
                    on_start=lambda total, todo: progress.update(scoring, total=total, completed=total - todo),
                    on_done=lambda task, status: progress.advance(scoring),
                )
    for c in cases:
        console.print(f"case: {c}")
    if is_suite and evaluate and cases:
        console.print(f"leaderboard: {eval_dir / 'leaderboard.md'}")
        console.print(f"report: {report}")
