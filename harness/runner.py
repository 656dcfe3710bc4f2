"""The run pipeline, one scenario at a time: deploy -> load -> gate -> faults -> recovery -> collect -> teardown.

``run_scenario`` reads top to bottom as the timeline (seconds from the load start):

    deploy, ready              backend testbed (chaosbench.testbeds; the contract: chaosbench.backends.base), engine
                               serving; a reusable testbed takes the next case after the recovery gate
    load start (t0)            testbed.start_load: Locust in its own process (chaosbench.load.driver; k8s: a Job)
    warm-up                    until t0 + workload.warmup
    baseline gate              steady-state probes (chaosbench.probes) just before the first fault
                               (clean run: at t0 + nominal_inject); a failed gate = no injection, case "failed"
    fault window(s)            chaosbench.faults.lifecycle.injected() at t0 + step.start, held step.duration while
                               the stop conditions are checked every telemetry step (abort on one that holds)
    recovery window            until the load ends; probes again near the end (the deviation check)
    traces                     testbed.start_profile/stop_profile at the trace windows (chaosbench.timeline; default:
                               baseline window before the (nominal) injection, through the fault's end)
    collect                    load/ and topology.json here; data.csv, logs.csv, traces/ by testbed.collect_case
    teardown                   always (try/finally, SIGINT/SIGTERM: chaosbench.signals), then manifest.json and the
                               final rename

Every stage is journalled in events.jsonl (start/end, status, duration_s, error; chaosbench.stages).
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaosbench import signals
from chaosbench.backends.base import Testbed
from chaosbench.case import CaseStatus, CaseWriter, GroundTruth, Topology
from chaosbench.errors import ChaosbenchError
from chaosbench.probes import probes_hold
from chaosbench.stages import Progress, Recorder
from chaosbench.testbeds import Bed, deploy, ready_bed, teardown
from chaosbench.timeline import Timeline, profile_actions, trace_windows

if TYPE_CHECKING:
    from chaosbench.campaign import Campaign
    from chaosbench.rundir import CaseJob, RunDir
    from chaosbench.scenario import Scenario, Suite

PROBE_SETTLE_S = 5.0  # the recovery probes run this long before the load ends
OnCase = Callable[[int, int, "CaseJob"], None]  # (index, total, job) as each case starts
Log = Callable[[str], None]
Outcome = tuple[CaseStatus, str | None, dict[str, Any]]  # (status, reason, manifest extras)


class Interrupted(ChaosbenchError):
    """Ctrl-C or SIGTERM: the testbed was torn down, the case left as ``<case>.partial``."""

    exit_code = 130


# ----------------------------------------------------------------------------- one case


def clean_ground_truth() -> GroundTruth:
    return GroundTruth(fault_id=None, fault_class=None, component=None, node=None, rank=None, start=None, end=None,
                       mechanism=None, realism=None, verified=False)


def topology_of(scenario: Scenario, testbed: Testbed) -> Topology:
    """What a detector may know of the deployment; the engine is the one that served (``testbed.engine``)."""
    topo = scenario.spec.deployment.topology
    ranks = topo.rank_names()
    engine = testbed.engine
    return Topology(backend=scenario.spec.deployment.backend, engine=engine,
                    nodes=tuple(topo.node_names()), ranks=tuple(ranks),
                    rank_node={r: topo.rank_node(i) for i, r in enumerate(ranks)},
                    components=("ingress", *topo.component_names()),
                    emulated_device=engine == "mini", layout=topo.grid.record())


def _gate_and_faults(scenario: Scenario, testbed: Testbed, writer: CaseWriter,
                     tl: Timeline) -> tuple[CaseStatus, str | None]:
    """Baseline gate, then each fault (or the nominal injection of a clean run). Returns (status, reason)."""
    spec, rec = scenario.spec, tl.rec
    first = spec.faults[0].start if spec.faults else spec.nominal_inject
    tl.wait_until(max(spec.workload.warmup, first - 1.0))
    with rec.stage("baseline.gate"):
        failed = probes_hold(testbed.prometheus_url, spec.steady_state, testbed.promql)
    if failed:
        writer.event("baseline.gate", "point", "failed", error=failed)
        return "failed", f"steady state not met before injection: {failed}"
    if not spec.faults:
        tl.wait_until(spec.nominal_inject)
        writer.write_inject_time(tl.t0 + spec.nominal_inject)
        writer.write_ground_truth(clean_ground_truth())
        return "completed", None
    from chaosbench.faults.lifecycle import hold_faults  # the fault stage; only faulty scenarios need it

    return hold_faults(spec, testbed, writer, tl)


def _collect(scenario: Scenario, testbed: Testbed, writer: CaseWriter, load_dir: Path, t0: float, t_end: float,
             case_start: float) -> None:
    """The load records (whichever backend ran the load), then the testbed's own collection."""
    from chaosbench.load.summary import read_requests

    for f in sorted(load_dir.glob("*")):
        if f.name in ("requests.jsonl", "summary.json") or f.name.startswith("locust_"):
            shutil.copy2(f, writer.path / "load" / f.name)
    testbed.collect_case(writer, scenario, t0, t_end, read_requests(load_dir / "requests.jsonl"), case_start)


def with_seed(scenario: Scenario, seed: int | None) -> Scenario:
    if seed is None:
        return scenario
    workload = scenario.spec.workload.model_copy(update={"seed": seed})
    return scenario.model_copy(update={"spec": scenario.spec.model_copy(update={"workload": workload})})


def _ensure_ground_truth(writer: CaseWriter, scenario: Scenario, t0: float | None) -> None:
    """A case that never reached its injection still carries ground truth (unverified) and an inject time."""
    if not (writer.labels_path / "ground_truth.json").exists():
        gt = clean_ground_truth()
        if scenario.spec.faults:
            from chaosbench.faults.catalog import get_fault

            step = scenario.spec.faults[0]
            spec = get_fault(step.id)
            gt["fault_id"], gt["fault_class"] = spec.id, spec.fault_class
            topo, target = scenario.spec.deployment.topology, step.target
            gt["component"], gt["node"], gt["rank"] = target.component, topo.node_of(target.component), target.rank
            if target.kind in ("replica", "stage"):
                gt["ranks"] = topo.ranks_of(target.component)
        writer.write_ground_truth(gt)
    if not (writer.path / "inject_time.txt").exists() and t0 is not None:
        first = scenario.spec.faults[0].start if scenario.spec.faults else scenario.spec.nominal_inject
        writer.write_inject_time(t0 + first)


def _load_phase(scenario: Scenario, testbed: Testbed, writer: CaseWriter, rec: Recorder, load_dir: Path,
                case_start: float) -> Outcome:
    """From the load start to collect; returns (status, reason, manifest extras)."""
    from chaosbench.load.driver import LoadConfig

    spec = scenario.spec
    duration = spec.workload.duration
    with rec.stage("load.start"):
        load = testbed.start_load(LoadConfig.from_scenario(scenario, testbed.api_url), load_dir)
        try:
            t0 = load.wait_started()
        except BaseException:
            load.stop()
            raise
    extras: dict[str, Any] = {"load_start": t0}
    try:
        tl = Timeline(t0, profile_actions(testbed, trace_windows(scenario)), rec, duration)
        status, reason = _gate_and_faults(scenario, testbed, writer, tl)
        if status != "failed":
            tl.wait_until(duration - PROBE_SETTLE_S)
            with rec.stage("recovery.probes"):
                extras["steady_state_after"] = probes_hold(testbed.prometheus_url, spec.steady_state,
                                                           testbed.promql) or "ok"
            tl.wait_until(duration)
        tl.drain()
        with rec.stage("load.end"):
            summary = load.finish(timeout_s=0 if status == "failed" else 60)
        extras["load_end"] = time.time()
        extras["load"] = {k: summary[k] for k in ("requests", "errors", "throughput_rps", "goodput_rps")}
    finally:
        load.stop()
    _ensure_ground_truth(writer, scenario, t0)
    with rec.stage("collect"):
        _collect(scenario, testbed, writer, load_dir, t0, extras["load_end"], case_start)
    return status, reason, extras


def _run_case(job: CaseJob, writer: CaseWriter, rec: Recorder, bed: Bed) -> Outcome:
    scenario, testbed = job.scenario, bed.testbed
    case_start = time.time()
    testbed.new_case()
    writer.write_json("topology.json", topology_of(scenario, testbed).to_json())
    extras: dict[str, Any] = {"engine": testbed.engine, "testbed_case": bed.cases}
    load_dir = Path(testbed.run_dir) / "load" / job.case_id
    status, reason, loaded = _load_phase(scenario, testbed, writer, rec, load_dir, case_start)
    extras.update(loaded)
    return status, reason, extras


def _finalize(writer: CaseWriter, job: CaseJob, rec: Recorder, status: CaseStatus, reason: str | None,
              extras: dict[str, Any], run_id: str) -> None:
    from chaosbench.collect.manifest import build_manifest

    manifest = build_manifest(job.scenario, seed=job.scenario.spec.workload.seed, run_id=run_id,
                              timings=rec.timings, case_index=job.index, **extras,
                              **({"reason": reason} if reason else {}))
    writer.finalize(dict(manifest), status)


# ----------------------------------------------------------------------------- many cases


def _reason(exc: Exception) -> str:
    """A failed case's reason: the message of an error raised on purpose, else the type too."""
    return str(exc) if isinstance(exc, ChaosbenchError) else f"{type(exc).__name__}: {exc}"


def run_jobs(jobs: list[CaseJob], run: RunDir, *, progress: Progress | None = None, on_case: OnCase | None = None,
             deploy_kwargs: dict[str, Any] | None = None, log: Log | None = None) -> list[Path]:
    """Run ``jobs`` (chaosbench.rundir.CaseJob) into the run directory ``run`` (chaosbench.rundir.RunDir), in order.

    Consecutive cases of one group share a testbed: between two cases the recovery gate (chaosbench.gate) must
    pass, else the testbed is redeployed. A failed case is finalized (status failed) and the run goes on; Ctrl-C
    or SIGTERM tears the testbed down, leaves the running case ``.partial`` and raises ``Interrupted``.
    Every case gets its label in ``labels.jsonl`` when it ends. Returns the finished case directories."""
    import yaml

    say = log or (lambda _msg: None)
    out: list[Path] = []
    bed: Bed | None = None
    try:
        with signals.interrupts_raise():
            for i, job in enumerate(jobs):
                if on_case:
                    on_case(i, len(jobs), job)
                writer = CaseWriter(run.case_dir(job.case_id))
                rec = Recorder(writer, progress)
                writer.write_label_text("scenario.resolved.yaml", yaml.safe_dump(job.scenario.dump(), sort_keys=False))
                status: CaseStatus = "failed"
                reason: str | None = None
                extras: dict[str, Any] = {}
                error: Exception | None = None
                try:
                    bed = ready_bed(job, bed, run.testbeds, rec, deploy_kwargs, say)
                    status, reason, extras = _run_case(job, writer, rec, bed)
                except KeyboardInterrupt:
                    writer.event("run", "point", "failed", error="interrupted")
                    raise
                except Exception as exc:  # noqa: BLE001 - the case is finalized as failed, the run goes on
                    error, reason = exc, _reason(exc)
                    say(f"case {job.case_id}: {reason}")
                if bed is not None and bed.down:
                    bed = None
                if bed is not None:
                    bed.last_case, bed.cases = job.case_id, bed.cases + 1
                _finalize(writer, job, rec, status, reason, extras, run.root.name)
                run.add_label(job)
                out.append(run.case_dir(job.case_id))
                if error is not None and not isinstance(error, ChaosbenchError) and bed is not None:
                    teardown(bed, say)  # an unexpected error: do not trust the testbed with the next case
                    bed = None
    except KeyboardInterrupt as exc:
        raise Interrupted("interrupted; testbed torn down, the unfinished case left .partial "
                          f"(resume with --resume {run.root})") from exc
    finally:
        if bed is not None:
            teardown(bed, say)
    return out


def run_scenario(scenario: Scenario, out_dir: Path, seed: int | None = None, *, progress: Progress | None = None,
                 deploy_kwargs: dict[str, Any] | None = None) -> Path:
    """Run one scenario on a testbed of its own into the case directory ``out_dir`` (finalized, whatever the
    status). Under a run (``<run>/cases/<id>``) its labels go to ``<run>/labels/<id>``.

    Raises the ChaosbenchError that failed the case after finalizing it, and ``Interrupted``
    (the case stays ``<out_dir>.partial``) on Ctrl-C/SIGTERM; the testbed is torn down in every case.
    """
    import yaml

    from chaosbench.rundir import CaseJob

    scenario = with_seed(scenario, seed)
    out_dir = Path(out_dir)
    job = CaseJob(index=0, case_id=out_dir.name, scenario=scenario, group="")
    writer = CaseWriter(out_dir)
    rec = Recorder(writer, progress)
    writer.write_label_text("scenario.resolved.yaml", yaml.safe_dump(scenario.dump(), sort_keys=False))
    bed: Bed | None = None
    error: Exception | None = None
    status: CaseStatus = "failed"
    reason: str | None = None
    extras: dict[str, Any] = {}
    try:
        with signals.interrupts_raise():
            bed = deploy(scenario, out_dir.parent / f".{out_dir.name}.run-{time.strftime('%Y%m%d%H%M%S')}", rec,
                          "", deploy_kwargs)
            status, reason, extras = _run_case(job, writer, rec, bed)
    except KeyboardInterrupt:
        error = Interrupted(f"interrupted; testbed torn down, partial case left at {writer.path}")
    except Exception as exc:  # noqa: BLE001 - finalize as failed, then re-raise
        error, reason = exc, _reason(exc)
    finally:
        if bed is not None:
            with rec.stage("teardown"):
                extras["teardown_leftovers"] = teardown(bed, lambda _msg: None)
    if isinstance(error, Interrupted):
        writer.event("run", "point", "failed", error="interrupted")
        raise error
    _finalize(writer, job, rec, status, reason, extras, out_dir.parent.name)
    if error is not None:
        raise error
    return out_dir


def new_run_root(out_root: Path, doc: Scenario | Suite | Campaign) -> Path:
    return Path(out_root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{doc.metadata.name}"


def run_document(doc: Scenario | Suite | Campaign, path: Path, run_root: Path, *, seed: int | None = None,
                 resume: bool = False, split: str | None = None, progress: Progress | None = None,
                 on_case: OnCase | None = None, log: Log | None = None,
                 deploy_kwargs: dict[str, Any] | None = None) -> tuple[RunDir, list[Path]]:
    """Run a loaded scenario, suite or campaign (``doc``, read from ``path``) into the run directory
    ``run_root`` (see ``new_run_root``), or, with ``resume``, finish the interrupted run there. ``split``
    (campaigns): only the cases of that split (dev while tuning; test once the detectors are frozen).

    Returns (the chaosbench.rundir.RunDir, every finished case directory of the run, in plan order)."""
    from chaosbench import jobs as plan_jobs
    from chaosbench.campaign import Campaign
    from chaosbench.errors import InputInvalid
    from chaosbench.rundir import RunDir, execution_order
    from chaosbench.scenario import Suite

    kind = type(doc).__name__.lower()
    run = RunDir(run_root)
    known: dict[int, str] | None = None
    salt: int | None = secrets.randbits(31)
    if resume:
        run.check_source(path)
        info = run.run_info()
        known, salt, split = run.plan_ids(), info.get("salt"), info.get("split")
    if isinstance(doc, Suite):
        jobs = plan_jobs.suite_jobs(doc, path, known)
    elif isinstance(doc, Campaign):
        jobs = plan_jobs.campaign_jobs(doc, path, known, salt)
    else:
        jobs = plan_jobs.scenario_jobs([with_seed(doc, seed)], known)
    if split is not None:
        if kind != "campaign":
            raise InputInvalid("--split: only a campaign's cases have a split")
        jobs = [j for j in jobs if j.draw.get("split") == split]
    if resume:
        order = {cid: i for i, cid in enumerate(run.run_info().get("order", []))}
        done = run.finished()
        todo = sorted((j for j in jobs if j.case_id not in done), key=lambda j: order.get(j.case_id, len(order)))
    else:
        todo = execution_order(jobs)
        run.start(kind, path, todo, {"seed": seed, "salt": salt, "split": split})
    run_jobs(todo, run, progress=progress, on_case=on_case, log=log, deploy_kwargs=deploy_kwargs)
    if kind == "campaign":
        from chaosbench.campaign import write_dataset_card

        write_dataset_card(run.root)
    finished = [run.case_dir(j.case_id) for j in sorted(jobs, key=lambda j: j.index)]
    return run, [c for c in finished if c.is_dir()]


def run(path: str | Path, out: str | Path = "results", *, split: str | None = None) -> Path:
    """Run a scenario, suite or campaign file into a new run directory under ``out`` and return it, as
    ``chaosbench run PATH --out OUT --no-eval`` does (evaluate it with ``chaosbench.evaluate``)."""
    from chaosbench.campaign import load_any

    doc = load_any(path)
    run_dir, _ = run_document(doc, Path(path), new_run_root(Path(out), doc), split=split)
    return run_dir.root


def run_suite(suite: Suite | str | Path, out_root: Path, *, suite_path: Path | None = None,
              progress: Progress | None = None, on_case: OnCase | None = None) -> list[Path]:
    """Every (scenario x repetition x seed) of a suite into ``<out_root>/<run-id>/cases/<id>/``: a suite file, or
    a loaded Suite plus its ``suite_path`` (scenario entries are relative to it)."""
    from chaosbench.errors import InputInvalid
    from chaosbench.scenario import load_suite

    if isinstance(suite, (str, Path)):
        suite_path, suite = Path(suite), load_suite(suite)
    if suite_path is None:
        raise InputInvalid("run_suite: give the suite file (its scenario entries are relative to it)")
    return run_document(suite, Path(suite_path), new_run_root(out_root, suite), progress=progress, on_case=on_case)[1]
