"""``chaosbench run SCENARIO|SUITE|CAMPAIGN``: deploy, load, inject, collect, tear down; then evaluate and report.

The terminal gets progress only: a rich display on a TTY, else one plain line per case phase with the elapsed
seconds. Everything else the run's processes print (Ray, Serve, gRPC, Ansible) goes to ``<run>/logs/run.log``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from chaosbench.errors import InputInvalid

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from chaosbench.campaign import Campaign
    from chaosbench.rundir import CaseJob
    from chaosbench.runner import Log, OnCase
    from chaosbench.scenario import Scenario, Suite
    from chaosbench.stages import Progress as OnPhase

    Document = Scenario | Suite | Campaign


@contextmanager
def terminal_to_log(log: Path) -> Iterator[int]:
    """Point this process's stdout and stderr (file descriptors, so Ray's C++ core and child processes follow)
    at ``log``; yields a descriptor of the real terminal for the progress display."""
    log.parent.mkdir(parents=True, exist_ok=True)
    saved_out, saved_err = os.dup(1), os.dup(2)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield saved_err
    finally:
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)


class PlainProgress:
    """One line per case phase, for a terminal that is not one (CI logs, a redirected run)."""

    def __init__(self, console: Console) -> None:
        self.console, self.t0, self.case, self.phase = console, time.monotonic(), "", ""

    def on_case(self, i: int, n: int, job: CaseJob) -> None:
        self.case, self.phase = f"case {i + 1}/{n} {job.case_id}", ""

    def on_phase(self, name: str, fraction: float | None) -> None:
        if name != self.phase:
            self.phase = name
            self.console.print(f"[{time.monotonic() - self.t0:7.1f}s] {self.case}: {name}", highlight=False)

    def say(self, msg: str) -> None:
        self.console.print(f"[{time.monotonic() - self.t0:7.1f}s] {msg}", highlight=False)


def _rich_progress(console: Console) -> tuple[Progress, OnCase, OnPhase, Log]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, transient=False)
    overall = bar.add_task("cases", total=None)
    phase = bar.add_task("starting", total=1.0)

    def on_case(i: int, n: int, job: CaseJob) -> None:
        bar.update(overall, total=n, completed=i, description=f"case {i + 1}/{n} {job.case_id}")
        bar.update(phase, completed=0)

    def on_phase(name: str, fraction: float | None) -> None:
        bar.update(phase, description=name, **({"completed": fraction} if fraction is not None else {}))

    return bar, on_case, on_phase, lambda msg: bar.console.print(msg, highlight=False)


def _with_overrides(doc: Document, path: Path, backend: str | None, repetitions: int | None) -> Document:
    """Apply command-line overrides through the same loader as the file itself (so they are validated too)."""
    from chaosbench.scenario import Suite, load_scenario

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
    if backend is not None and type(doc).__name__ == "Campaign":
        raise InputInvalid("--backend: a campaign names its backend in its base scenario")
    return load_scenario(path, {"deployment": {"backend": backend}}) if backend else doc


def _scenarios_of(doc: Document, path: Path, *, first_repetition: bool = False) -> list[Scenario]:
    """The scenarios a document runs (a campaign: its first case, whose deployment every case shares; a suite: each
    repetition, or with ``first_repetition`` each scenario once)."""
    from chaosbench.campaign import Campaign, plan, to_scenario
    from chaosbench.scenario import Suite, expand_suite

    if isinstance(doc, Campaign):
        return [to_scenario(doc, plan(doc)[0], path)]
    if isinstance(doc, Suite):
        return [s for s, rep, _ in expand_suite(doc, path) if not (first_repetition and rep)]
    return [doc]


def _needs_root(doc: Document, path: Path) -> bool:
    from chaosbench.backends import backend

    return any(backend(s.spec.deployment.backend).needs_root for s in _scenarios_of(doc, path))


def _dry_run(doc: Document, path: Path, out: Path) -> None:
    from chaosbench.backends import backend as backend_named
    from chaosbench.backends import backends
    from chaosbench.registry import import_ref
    from chaosbench.scenario import Scenario, Suite

    if not isinstance(doc, Scenario | Suite):
        raise InputInvalid("--dry-run renders a scenario or a suite, not a campaign")
    root = out / f"{time.strftime('%Y%m%d-%H%M%S')}-{doc.metadata.name}-dry-run"
    for scenario in _scenarios_of(doc, path, first_repetition=True):
        chosen = backend_named(scenario.spec.deployment.backend)
        if chosen.dry_run is None:
            able = [b.name for b in backends().values() if b.dry_run]
            raise InputInvalid(f"--dry-run: the {chosen.name} backend has no dry run; add --backend "
                               f"{' or --backend '.join(able)}")
        rendered = import_ref(chosen.dry_run)(scenario, root / scenario.metadata.name)
        typer.echo(f"rendered {scenario.metadata.name}: {rendered}")


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        path: Path = typer.Argument(..., help="A scenario, suite or campaign YAML file."),
        out: Path = typer.Option(Path("results"), "--out", help="Results root; the run goes to <out>/<run-id>/."),
        resume: Path = typer.Option(None, "--resume", help="Finish the interrupted run RUN_DIR of this same file: "
                                    "finished cases are kept, unfinished ones redone with the same draw."),
        seed: int = typer.Option(None, "--seed", help="Workload seed of a single scenario (default: the scenario's)."),
        split: str = typer.Option(None, "--split", help="Campaigns: run only the dev or the test cases."),
        repetitions: int = typer.Option(None, "--repetitions", min=1, help="Override a suite's repetitions."),
        backend: str = typer.Option(None, "--backend", help="Override deployment.backend: local, k8s or a plugin's."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Render every manifest and variable, touch nothing "
                                                             "(backends that have a dry run: k8s)."),
        evaluate: bool = typer.Option(True, "--eval/--no-eval", help="After the cases: evaluate and write the report."),
        workers: int = typer.Option(2, "--workers", min=0, help="Evaluation processes."),
    ) -> None:
        """Run a scenario (one case), a suite (every scenario x repetition x seed) or a campaign (its sampled
        cases), then evaluate the methods and write the report."""
        from chaosbench.campaign import load_any

        if backend is not None:
            from chaosbench.backends import backend as backend_named

            backend_named(backend)  # unknown: one line naming the known ones
        if not path.is_file():
            raise InputInvalid(f"{path}: no such file")
        doc = _with_overrides(load_any(path), path, backend, repetitions)
        if dry_run:
            _dry_run(doc, path, out)
            return
        if resume is not None and not (resume / "run.json").is_file():
            raise InputInvalid(f"--resume {resume}: not a run directory (no run.json)")
        if split not in (None, "dev", "test"):
            raise InputInvalid(f"--split: must be dev or test, got {split!r}")
        _run(doc, path, out, resume, seed, split, evaluate, workers)


def _run(doc: Document, path: Path, out: Path, resume: Path | None, seed: int | None, split: str | None, evaluate: bool,
         workers: int) -> None:
    from rich.console import Console

    from chaosbench.backends.local.preflight import is_root, no_root_message
    from chaosbench.runner import new_run_root, run_document

    run_root = resume if resume is not None else new_run_root(out, doc)
    log = run_root / "logs" / "run.log"
    with terminal_to_log(log) as tty_fd:
        tty = os.fdopen(os.dup(tty_fd), "w")
        console = Console(file=tty, highlight=False, width=None if tty.isatty() else 240)
        if _needs_root(doc, path) and not is_root():
            console.print(f"[yellow]warning:[/] {no_root_message()}")
        console.print(f"run: {run_root} (log: {log})", highlight=False)
        if console.is_terminal:
            bar, on_case, on_phase, say = _rich_progress(console)
        else:
            plain = PlainProgress(console)
            bar, on_case, on_phase, say = None, plain.on_case, plain.on_phase, plain.say
        with bar or _nothing():
            run, cases = run_document(doc, path, run_root, seed=seed, resume=resume is not None, split=split,
                                      progress=on_phase,
                                      on_case=on_case, log=say)
            report = None
            if evaluate and cases:
                on_phase("evaluating methods", None)
                from chaosbench.evaluate import evaluate as evaluate_run
                from chaosbench.evaluate import methods_of

                eval_dir = evaluate_run(run.root, run.root / "eval", methods_of(doc, path), workers, report=True)
                report = eval_dir / "report.html"
        statuses: dict[str, int] = {}
        for rec in run.read_labels():
            statuses[rec.get("status", "?")] = statuses.get(rec.get("status", "?"), 0) + 1
        console.print(f"cases: {len(cases)} in {run.cases} ("
                      + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + ")")
        if report is not None:
            console.print(f"leaderboard: {report.with_name('leaderboard.md')}")
            console.print(f"report: {report}")
        console.file.flush()


@contextmanager
def _nothing() -> Iterator[None]:
    yield
