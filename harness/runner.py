"""The run pipeline, one scenario at a time: deploy -> load -> gate -> faults -> recovery -> collect -> teardown.

``run_scenario`` reads top to bottom as the timeline (seconds from the load start):

    deploy, ready              backend testbed (harness.backends), engine serving
    load start (t0)            Locust in its own process (harness.load.driver)
    warm-up                    until t0 + workload.warmup
    baseline gate              steady-state probes (PromQL within tolerance) just before the first fault
                               (clean run: at t0 + nominal_inject); a failed gate = no injection, case "failed"
    fault window(s)            harness.faults.lifecycle.injected() at t0 + step.start, held step.duration while
                               the stop conditions are checked every telemetry step (abort on one that holds)
    recovery window            until the load ends; probes again near the end (the deviation check)
    traces                     /start_profile and /stop_profile at the trace windows (default: baseline
                               window before the (nominal) injection, through the fault's end)
    collect                    data.csv, logs.csv, traces/, load/, topology.json
    teardown                   always (try/finally, SIGINT/SIGTERM), then manifest.json and the final rename

Every stage is journalled in events.jsonl (start/end, status, duration_s, error).
"""

from __future__ import annotations

import secrets
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.case import CaseWriter, GroundTruth, Topology
from harness.errors import ChaosbenchError, FaultNotVerified

Progress = Callable[[str, float | None], None]  # (phase, fraction of the load done or None)
PROBE_SETTLE_S = 5.0  # the recovery probes run this long before the load ends


class Interrupted(ChaosbenchError):
    """Ctrl-C or SIGTERM: the testbed was torn down, the case left as ``<case>.partial``."""

    exit_code = 130


class _Terminated(KeyboardInterrupt):
    pass


@dataclass
class Recorder:
    """Journals stages into events.jsonl and keeps their durations for the manifest."""

    writer: CaseWriter
    progress: Progress | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, **detail: Any) -> Iterator[None]:
        t = time.time()
        if self.progress:
            self.progress(name, None)
        self.writer.event(name, "start", **({"detail": detail} if detail else {}))
        try:
            yield
        except BaseException as exc:
            err = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            self.writer.event(name, "end", "failed", duration_s=round(time.time() - t, 3), error=err,
                              traceback=traceback.format_exc(limit=8))
            raise
        self.timings[name] = time.time() - t
        self.writer.event(name, "end", duration_s=round(self.timings[name], 3))


# ----------------------------------------------------------------------------- timeline pieces


def trace_windows(scenario: Any) -> list[tuple[float, float]]:
    """(start, end) seconds after the load start; default: baseline window + the (nominal) fault window."""
    spec = scenario.spec
    if not spec.traces.enabled:
        return []
    if spec.traces.windows:
        return [(w.start, w.start + w.duration) for w in spec.traces.windows]
    base = spec.traces.baseline
    if spec.faults:
        first = spec.faults[0]
        return [(max(0.0, first.start - base), first.start + first.duration)]
    nominal = spec.nominal_duration if spec.nominal_duration is not None else base
    return [(max(0.0, spec.nominal_inject - base), min(spec.workload.duration, spec.nominal_inject + nominal))]


def promql(url: str, query: str) -> list[float]:
    from prometheus_api_client import PrometheusConnect

    result = PrometheusConnect(url=url, disable_ssl=True).custom_query(query)
    if isinstance(result, list):
        return [float(r["value"][1]) for r in result if "value" in r]
    return []


def _same(query: str) -> str:
    return query


def probes_hold(url: str, probes: list[Any], rewrite: Callable[[str], str] = _same) -> str | None:
    """None if every probe is within tolerance, else the reason of the first that is not.

    ``rewrite``: the backend's translation of the scenario's PromQL (``testbed.promql``; k8s metric names)."""
    for p in probes:
        try:
            values = promql(url, rewrite(p.query))
        except Exception as exc:  # noqa: BLE001 - an unreachable Prometheus fails the gate, it does not crash
            return f"probe {p.name}: query failed ({type(exc).__name__}: {exc})"
        lo, hi = p.tolerance.min, p.tolerance.max
        bad = [v for v in values if (lo is not None and v < lo) or (hi is not None and v > hi)]
        if not values or bad:
            got = "no data" if not values else ", ".join(f"{v:g}" for v in bad)
            return f"probe {p.name}: {got} outside [{lo}, {hi}]"
    return None


@dataclass
class StopWatch:
    """Stop conditions: a condition aborts the fault once it has held (non-zero) for its ``for_``."""

    url: str
    conditions: list[Any]
    since: dict[str, float] = field(default_factory=dict)
    rewrite: Callable[[str], str] = _same  # as in probes_hold

    def check(self) -> str | None:
        now = time.time()
        for c in self.conditions:
            try:
                held = any(v != 0 for v in promql(self.url, self.rewrite(c.query)))
            except Exception:  # noqa: BLE001 - a failing query is not a held condition
                held = False
            if not held:
                self.since.pop(c.name, None)
                continue
            first = self.since.setdefault(c.name, now)
            if now - first >= c.for_:
                return f"stop condition {c.name} held for {now - first:.0f}s"
        return None


@dataclass
class Timeline:
    """Sleeps to offsets from the load start; trace start/stop calls fall due on the way and run in one
    background thread, in order, so a slow profiler never delays an injection."""

    t0: float
    actions: list[tuple[float, str, Callable[[], None]]]
    rec: Recorder
    duration: float
    _pool: Any = None
    _futures: list[Any] = field(default_factory=list)

    def run_due(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        while self.actions and time.time() >= self.t0 + self.actions[0][0]:
            _, name, fn = self.actions.pop(0)
            self._pool = self._pool or ThreadPoolExecutor(1, thread_name_prefix="traces")
            self._futures.append(self._pool.submit(self._run, name, fn))

    def _run(self, name: str, fn: Callable[[], None]) -> None:
        try:
            with self.rec.stage(name):
                fn()
        except Exception:  # noqa: BLE001 - journalled by the stage; a lost trace window does not end the run
            pass

    def drain(self, timeout_s: float = 180.0) -> None:
        """Run what is still due and wait for the trace calls (pending ones are dropped after ``timeout_s``)."""
        from concurrent.futures import wait

        self.run_due()
        if self._pool is not None:
            wait(self._futures, timeout=timeout_s)
            self._pool.shutdown(wait=False, cancel_futures=True)

    def wait_until(self, offset: float, tick: float = 0.5, check: Callable[[], bool] | None = None) -> None:
        """Until t0 + offset (or ``check()`` returns True), firing due actions and reporting progress."""
        while (left := self.t0 + offset - time.time()) > 0:
            self.run_due()
            if self.rec.progress:
                self.rec.progress("load", min(1.0, (time.time() - self.t0) / self.duration))
            if check is not None and check():
                return
            time.sleep(min(tick, left))
        self.run_due()


def _profile_actions(testbed: Any, windows: list[tuple[float, float]]) -> list[tuple[float, str, Callable[[], None]]]:
    """The engine's /start_profile and /stop_profile, or the backend's own (``testbed.start_profile``)."""
    import httpx

    def call(path: str) -> Callable[[], None]:
        hook = getattr(testbed, path.strip("/"), None)
        if callable(hook):
            return lambda: hook()
        return lambda: httpx.post(f"{testbed.api_url}{path}", timeout=300).raise_for_status()

    acts = [(s, "traces.start", call("/start_profile")) for s, _ in windows]
    acts += [(e, "traces.stop", call("/stop_profile")) for _, e in windows]
    return sorted(acts, key=lambda a: a[0])


def clean_ground_truth() -> GroundTruth:
    return GroundTruth(fault_id=None, fault_class=None, component=None, node=None, rank=None, start=None, end=None,
                       mechanism=None, realism=None, verified=False)


def engine_of(scenario: Any, testbed: Any) -> str:
    """The engine that served: the testbed's (the k8s backend always serves vLLM, whatever the scenario says)."""
    return getattr(testbed, "engine", None) or scenario.spec.deployment.engine


def topology_of(scenario: Any, testbed: Any) -> Topology:
    topo = scenario.spec.deployment.topology
    ranks = topo.rank_names()
    engine = engine_of(scenario, testbed)
    return Topology(backend=scenario.spec.deployment.backend, engine=engine,
                    nodes=tuple(topo.node_names()), ranks=tuple(ranks),
                    rank_node={r: topo.rank_node(i) for i, r in enumerate(ranks)},
                    components=("ingress", *topo.node_names(), *ranks),
                    emulated_device=engine == "mini")


# ----------------------------------------------------------------------------- stages


def _rewrite(testbed: Any) -> Callable[[str], str]:
    """The backend's translation of scenario PromQL to its metric names (k8s: Ray's prefix), if it has one."""
    hook = getattr(testbed, "promql", None)
    return hook if callable(hook) else _same


def _gate_and_faults(scenario: Any, testbed: Any, writer: CaseWriter, tl: Timeline) -> tuple[str, str | None]:
    """Baseline gate, then each fault (or the nominal injection of a clean run). Returns (status, reason)."""
    spec, rec = scenario.spec, tl.rec
    first = spec.faults[0].start if spec.faults else spec.nominal_inject
    tl.wait_until(max(spec.workload.warmup, first - 1.0))
    with rec.stage("baseline.gate"):
        failed = probes_hold(testbed.prometheus_url, spec.steady_state, _rewrite(testbed))
    if failed:
        writer.event("baseline.gate", "point", "failed", error=failed)
        return "failed", f"steady state not met before injection: {failed}"
    if not spec.faults:
        tl.wait_until(spec.nominal_inject)
        writer.write_inject_time(tl.t0 + spec.nominal_inject)
        writer.write_ground_truth(clean_ground_truth())
        return "completed", None
    return _hold_faults(spec, testbed, writer, tl)


def _hold_faults(spec: Any, testbed: Any, writer: CaseWriter, tl: Timeline) -> tuple[str, str | None]:
    """Inject each fault at its start and recover it at its end; faults may overlap (compound cases), so each
    injection's context is entered and left on its own. A fault is held for its declared duration from when it
    was verified (verification waits for a scrape or two), so the ground-truth window is as long as declared.
    Returns (status, reason): completed, aborted (a stop condition held) or not-verified."""
    from harness.faults.lifecycle import injected  # the fault stage; only faulty scenarios need it

    watch = StopWatch(testbed.prometheus_url, spec.stop_conditions, rewrite=_rewrite(testbed))
    todo = sorted(range(len(spec.faults)), key=lambda i: spec.faults[i].start)
    live: dict[int, tuple[Any, Any, float]] = {}  # fault index -> (its context, its Injection, end offset)
    aborted: list[str] = []

    def stop() -> bool:
        why = watch.check() if live else None
        if why:
            aborted.append(why)
            for _, inj, _ in live.values():
                inj.abort(why)
        return why is not None

    def close_all(exc: BaseException | None) -> None:
        for i in sorted(live, key=lambda i: live[i][2]):
            cm, _, _ = live.pop(i)
            try:
                cm.__exit__(*((type(exc), exc, exc.__traceback__) if exc else (None, None, None)))
            except BaseException:  # noqa: BLE001 - every fault is recovered; the first error is the one raised
                if exc is None:
                    raise

    try:
        while (todo or live) and not aborted:
            ending = min(live, key=lambda i: live[i][2]) if live else None
            if todo and (ending is None or spec.faults[todo[0]].start <= live[ending][2]):
                i = todo.pop(0)
                step = spec.faults[i]
                tl.wait_until(step.start, tick=spec.telemetry.step, check=stop)
                if aborted:
                    break
                cm = injected(testbed, step, writer, i)
                inj = cm.__enter__()
                start = max(step.start, inj.verified_at - tl.t0) if inj.verified_at is not None else step.start
                live[i] = (cm, inj, start + step.duration)
            elif ending is not None:
                tl.wait_until(live[ending][2], tick=spec.telemetry.step, check=stop)
                if not aborted:
                    cm, _, _ = live.pop(ending)
                    cm.__exit__(None, None, None)
    except FaultNotVerified as exc:
        close_all(None)
        return "not-verified", str(exc)
    except BaseException as exc:
        close_all(exc)
        raise
    close_all(None)
    return ("aborted", aborted[0]) if aborted else ("completed", None)


def _collect(scenario: Any, testbed: Any, writer: CaseWriter, load_dir: Path, t0: float, t_end: float,
             case_start: float) -> None:
    from harness.collect.logs import export_logs_csv
    from harness.collect.prometheus import Column, export_data_csv
    from harness.load.summary import read_requests

    for f in sorted(load_dir.glob("*")):
        if f.name in ("requests.jsonl", "summary.json") or f.name.startswith("locust_"):
            shutil.copy2(f, writer.path / "load" / f.name)
    if callable(getattr(testbed, "collect_case", None)):  # a backend with its own collectors (k8s)
        counts = testbed.collect_case(writer.path, scenario, t0, t_end, read_requests(load_dir / "requests.jsonl"))
        writer.event("collect.backend", "point", detail=dict(counts))
        return
    extra = [Column(m.name, f"sum({m.query})", "gauge", component=m.component)
             for m in scenario.spec.telemetry.extra_metrics]
    report = export_data_csv(testbed.prometheus_url, t0, t_end, writer.path / "data.csv",
                             step=scenario.spec.telemetry.step, requests=read_requests(load_dir / "requests.jsonl"),
                             extra=extra, health_path=writer.labels_path / "testbed_health.csv")
    writer.event("collect.metrics", "point", detail={"rows": report.rows, "columns": report.columns,
                                                      "filled_cells": report.filled_cells,
                                                      "dropped_columns": list(report.dropped_columns)})
    pid_rank = {r.pid: name for name, r in testbed.ranks.items() if r.pid}
    try:
        pid_rank.update({pid: name for name, pid in testbed.handle.rank_pids().items()})
    except Exception:  # noqa: BLE001 - a dead engine still leaves its logs
        pass
    plan = testbed.plan
    ray_nodes = plan.nodes if plan.isolated else plan.nodes[:1]  # without namespaces one Ray node holds all
    ray_dirs = {n.name: Path(n.ray_temp) / "session_latest" / "logs" for n in ray_nodes}
    n = export_logs_csv(writer.path / "logs.csv", engine_log=testbed.run_dir / "logs" / "engine.jsonl",
                        ray_log_dirs=ray_dirs, pid_rank=pid_rank, start=max(t0 - 60, case_start), end=time.time())
    writer.event("collect.logs", "point", detail={"lines": n})
    for f in sorted(testbed.trace_dir.glob("rank-*.json*")):
        shutil.copy2(f, writer.path / "traces" / f.name)


@contextmanager
def _signals() -> Iterator[None]:
    """SIGTERM raises like Ctrl-C while the run is live, and Ctrl-C raises even where the parent left SIGINT
    ignored (a background job): either way the testbed is torn down (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def term(signum: int, frame: Any) -> None:
        raise _Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, term), signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


@contextmanager
def _signals_held() -> Iterator[None]:
    """Teardown runs to the end: SIGINT/SIGTERM are delivered after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def with_seed(scenario: Any, seed: int | None) -> Any:
    if seed is None:
        return scenario
    workload = scenario.spec.workload.model_copy(update={"seed": seed})
    return scenario.model_copy(update={"spec": scenario.spec.model_copy(update={"workload": workload})})


def _ensure_ground_truth(writer: CaseWriter, scenario: Any, t0: float | None) -> None:
    """A case that never reached its injection still carries ground truth (unverified) and an inject time."""
    if not (writer.labels_path / "ground_truth.json").exists():
        gt = clean_ground_truth()
        if scenario.spec.faults:
            from harness.faults.catalog import get_fault

            step = scenario.spec.faults[0]
            spec = get_fault(step.id)
            gt.update(fault_id=spec.id, fault_class=spec.fault_class, component=step.target.component,
                      node=step.target.node, rank=step.target.rank)  # type: ignore[typeddict-item]
        writer.write_ground_truth(gt)
    if not (writer.path / "inject_time.txt").exists() and t0 is not None:
        first = scenario.spec.faults[0].start if scenario.spec.faults else scenario.spec.nominal_inject
        writer.write_inject_time(t0 + first)


def _load_phase(scenario: Any, testbed: Any, writer: CaseWriter, rec: Recorder, load_dir: Path,
                case_start: float) -> tuple[str, str | None, dict[str, Any]]:
    """From the load start to collect; returns (status, reason, manifest extras)."""
    from harness.load.driver import LoadConfig, start_load

    spec = scenario.spec
    duration = spec.workload.duration
    starter = getattr(testbed, "start_load", None) or start_load  # a backend may run its own Locust (k8s Job)
    with rec.stage("load.start"):
        load = starter(LoadConfig.from_scenario(scenario, testbed.api_url), load_dir)
        try:
            t0 = load.wait_started()
        except BaseException:
            load.stop()
            raise
    extras: dict[str, Any] = {"load_start": t0}
    try:
        tl = Timeline(t0, _profile_actions(testbed, trace_windows(scenario)), rec, duration)
        status, reason = _gate_and_faults(scenario, testbed, writer, tl)
        if status != "failed":
            tl.wait_until(duration - PROBE_SETTLE_S)
            with rec.stage("recovery.probes"):
                extras["steady_state_after"] = probes_hold(testbed.prometheus_url, spec.steady_state,
                                                           _rewrite(testbed)) or "ok"
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




# ----------------------------------------------------------------------------- one case, many cases


@dataclass
class Bed:
    """A deployed testbed and what the recovery gate compares it with."""

    testbed: Any
    group: str
    reference: Any = None  # harness.gate.Probe of the new testbed
    last_case: str | None = None
    cases: int = 0
    down: bool = False

    @property
    def reusable(self) -> bool:
        return callable(getattr(self.testbed, "fault_residue", None))


def _deploy(scenario: Any, run_dir: Path, rec: Recorder, group: str, deploy_kwargs: dict[str, Any] | None) -> Bed:
    from harness.backends import BACKENDS

    dep = scenario.spec.deployment
    with rec.stage("deploy", backend=dep.backend, engine=dep.engine):
        bed = Bed(BACKENDS.get(dep.backend)(scenario, run_dir, **(deploy_kwargs or {})), group)
    if bed.reusable:
        from harness.gate import baseline

        bed.reference = baseline(bed.testbed.api_url, dep.model.name)
    return bed


def _teardown(bed: Bed, log: Callable[[str], None]) -> str:
    if bed.down:
        return "nothing (already torn down)"
    with _signals_held():
        left = bed.testbed.teardown()
        bed.down = True
    text = left.describe() if hasattr(left, "describe") else \
        ("; ".join(left) or "nothing") if isinstance(left, list) else "unknown"
    log(f"testbed torn down after {bed.cases} case(s); left: {text}")
    return text


def _ready_bed(job: Any, bed: Bed | None, testbeds: Path, rec: Recorder, deploy_kwargs: dict[str, Any] | None,
               log: Callable[[str], None]) -> Bed:
    """The testbed for ``job``: the current one if it serves the same deployment and passes the recovery gate,
    else a new one (the old one torn down first)."""
    from harness.gate import recovery_gate

    writer = rec.writer
    if bed is not None and (bed.group != job.group or not bed.reusable):
        _teardown(bed, log)
        bed = None
    if bed is not None:
        with rec.stage("testbed.gate"):
            why, detail = recovery_gate(bed.testbed, job.scenario.spec.deployment.model.name, bed.reference,
                                        bed.last_case)
        writer.event("testbed.gate", "point", "failed" if why else "ok", detail=detail, **({"error": why} if why else {}))
        if why is None:
            writer.event("deploy", "point", detail={"reused": True, "cases_before": bed.cases})
            return bed
        log(f"case {job.case_id}: recovery gate failed ({why}); redeploying")
        writer.event("testbed.redeploy", "point", detail={"reason": why})
        _teardown(bed, log)
    n = len(list(testbeds.glob("tb-*"))) if testbeds.is_dir() else 0
    return _deploy(job.scenario, testbeds / f"tb-{n}", rec, job.group, deploy_kwargs)


def _run_case(job: Any, writer: CaseWriter, rec: Recorder, bed: Bed) -> tuple[str, str | None, dict[str, Any]]:
    scenario, testbed = job.scenario, bed.testbed
    case_start = time.time()
    if callable(getattr(testbed, "new_case", None)):
        testbed.new_case()
    writer.write_json("topology.json", topology_of(scenario, testbed).to_json())
    extras: dict[str, Any] = {"engine": engine_of(scenario, testbed), "testbed_case": bed.cases}
    load_dir = Path(testbed.run_dir) / "load" / job.case_id
    status, reason, loaded = _load_phase(scenario, testbed, writer, rec, load_dir, case_start)
    extras.update(loaded)
    return status, reason, extras


def _finalize(writer: CaseWriter, job: Any, rec: Recorder, status: str, reason: str | None,
              extras: dict[str, Any], run_id: str) -> None:
    from harness.collect.manifest import build_manifest

    manifest = build_manifest(job.scenario, seed=job.scenario.spec.workload.seed, run_id=run_id,
                              timings=rec.timings, case_index=job.index, **extras,
                              **({"reason": reason} if reason else {}))
    writer.finalize(dict(manifest), status)  # type: ignore[arg-type]


def run_jobs(jobs: list[Any], run: Any, *, progress: Progress | None = None,
             on_case: Callable[[int, int, Any], None] | None = None, deploy_kwargs: dict[str, Any] | None = None,
             log: Callable[[str], None] | None = None) -> list[Path]:
    """Run ``jobs`` (harness.rundir.CaseJob) into the run directory ``run`` (harness.rundir.RunDir), in order.

    Consecutive cases of one group share a testbed: between two cases the recovery gate (harness.gate) must
    pass, else the testbed is redeployed. A failed case is finalized (status failed) and the run goes on; Ctrl-C
    or SIGTERM tears the testbed down, leaves the running case ``.partial`` and raises ``Interrupted``.
    Every case gets its label in ``labels.jsonl`` when it ends. Returns the finished case directories."""
    import yaml

    say = log or (lambda _msg: None)
    out: list[Path] = []
    bed: Bed | None = None
    try:
        with _signals():
            for i, job in enumerate(jobs):
                if on_case:
                    on_case(i, len(jobs), job)
                writer = CaseWriter(run.case_dir(job.case_id))
                rec = Recorder(writer, progress)
                writer.write_label_text("scenario.resolved.yaml", yaml.safe_dump(job.scenario.dump(), sort_keys=False))
                status, reason, extras, error = "failed", None, {}, None
                try:
                    bed = _ready_bed(job, bed, run.testbeds, rec, deploy_kwargs, say)
                    status, reason, extras = _run_case(job, writer, rec, bed)
                except KeyboardInterrupt:
                    writer.event("run", "point", "failed", error="interrupted")
                    raise
                except Exception as exc:  # noqa: BLE001 - the case is finalized as failed, the run goes on
                    error = exc
                    reason = str(exc) if isinstance(exc, ChaosbenchError) else f"{type(exc).__name__}: {exc}"
                    say(f"case {job.case_id}: {reason}")
                if bed is not None and bed.down:
                    bed = None
                if bed is not None:
                    bed.last_case, bed.cases = job.case_id, bed.cases + 1
                _finalize(writer, job, rec, status, reason, extras, run.root.name)
                run.add_label(job)
                out.append(run.case_dir(job.case_id))
                if error is not None and not isinstance(error, ChaosbenchError) and bed is not None:
                    _teardown(bed, say)  # an unexpected error: do not trust the testbed with the next case
                    bed = None
    except KeyboardInterrupt as exc:
        raise Interrupted("interrupted; testbed torn down, the unfinished case left .partial "
                          f"(resume with --resume {run.root})") from exc
    finally:
        if bed is not None:
            _teardown(bed, say)
    return out


def run_scenario(scenario: Any, out_dir: Path, seed: int | None = None, *, progress: Progress | None = None,
                 deploy_kwargs: dict[str, Any] | None = None) -> Path:
    """Run one scenario on a testbed of its own into the case directory ``out_dir`` (finalized, whatever the
    status). Under a run (``<run>/cases/<id>``) its labels go to ``<run>/labels/<id>``.

    Raises the ChaosbenchError that failed the case after finalizing it, and ``Interrupted``
    (the case stays ``<out_dir>.partial``) on Ctrl-C/SIGTERM; the testbed is torn down in every case.
    """
    import yaml

    from harness.rundir import CaseJob

    scenario = with_seed(scenario, seed)
    out_dir = Path(out_dir)
    job = CaseJob(index=0, case_id=out_dir.name, scenario=scenario, group="")
    writer = CaseWriter(out_dir)
    rec = Recorder(writer, progress)
    writer.write_label_text("scenario.resolved.yaml", yaml.safe_dump(scenario.dump(), sort_keys=False))
    bed, error, status, reason, extras = None, None, "failed", None, {}
    try:
        with _signals():
            bed = _deploy(scenario, out_dir.parent / f".{out_dir.name}.run-{time.strftime('%Y%m%d%H%M%S')}", rec,
                          "", deploy_kwargs)
            status, reason, extras = _run_case(job, writer, rec, bed)
    except KeyboardInterrupt:
        error = Interrupted(f"interrupted; testbed torn down, partial case left at {writer.path}")
    except Exception as exc:  # noqa: BLE001 - finalize as failed, then re-raise
        error, reason = exc, f"{type(exc).__name__}: {exc}" if not isinstance(exc, ChaosbenchError) else str(exc)
    finally:
        if bed is not None:
            with rec.stage("teardown"):
                extras["teardown_leftovers"] = _teardown(bed, lambda _msg: None)
    if isinstance(error, Interrupted):
        writer.event("run", "point", "failed", error="interrupted")
        raise error
    _finalize(writer, job, rec, status, reason, extras, out_dir.parent.name)
    if error is not None:
        raise error
    return out_dir


def new_run_root(out_root: Path, doc: Any) -> Path:
    return Path(out_root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{doc.metadata.name}"


def run_document(doc: Any, path: Path, run_root: Path, *, seed: int | None = None, resume: bool = False,
                 split: str | None = None, progress: Progress | None = None, on_case: Callable[[int, int, Any], None] | None = None,
                 log: Callable[[str], None] | None = None, deploy_kwargs: dict[str, Any] | None = None) -> tuple[Any, list[Path]]:
    """Run a loaded scenario, suite or campaign (``doc``, read from ``path``) into the run directory
    ``run_root`` (see ``new_run_root``), or, with ``resume``, finish the interrupted run there. ``split``
    (campaigns): only the cases of that split (dev while tuning; test once the detectors are frozen).

    Returns (the harness.rundir.RunDir, every finished case directory of the run, in plan order)."""
    from harness import jobs as plan_jobs
    from harness.errors import InputInvalid
    from harness.rundir import RunDir, execution_order

    kind = type(doc).__name__.lower()
    run = RunDir(run_root)
    known, salt = None, secrets.randbits(31)
    if resume:
        run.check_source(path)
        info = run.run_info()
        known, salt, split = run.plan_ids(), info.get("salt"), info.get("split")
    if kind == "suite":
        jobs = plan_jobs.suite_jobs(doc, path, known)
    elif kind == "campaign":
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
        from harness.campaign import write_dataset_card

        write_dataset_card(run.root)
    finished = [run.case_dir(j.case_id) for j in sorted(jobs, key=lambda j: j.index)]
    return run, [c for c in finished if c.is_dir()]


def run_suite(suite: Any, out_root: Path, *, suite_path: Path | None = None, progress: Progress | None = None,
              on_case: Callable[[int, int, Any], None] | None = None) -> list[Path]:
    """Every (scenario x repetition x seed) of a suite into ``<out_root>/<run-id>/cases/<id>/``: a suite file, or
    a loaded Suite plus its ``suite_path`` (scenario entries are relative to it)."""
    from harness.errors import InputInvalid
    from harness.scenario import load_suite

    if isinstance(suite, (str, Path)):
        suite_path, suite = Path(suite), load_suite(suite)
    if suite_path is None:
        raise InputInvalid("run_suite: give the suite file (its scenario entries are relative to it)")
    return run_document(suite, Path(suite_path), new_run_root(out_root, suite), progress=progress, on_case=on_case)[1]
