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

import signal
import shutil
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
    return [(max(0.0, spec.nominal_inject - base), min(spec.workload.duration, spec.nominal_inject + base))]


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
                    components=("ingress", *topo.node_names(), *ranks, "host"),
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
    from harness.faults.lifecycle import injected  # the fault stage; only faulty scenarios need it

    watch = StopWatch(testbed.prometheus_url, spec.stop_conditions, rewrite=_rewrite(testbed))
    status, reason = "completed", None
    for i, step in enumerate(spec.faults):
        tl.wait_until(step.start)
        try:
            with injected(testbed, step, writer, i) as inj:
                def stop() -> bool:
                    why = watch.check()
                    if why:
                        inj.abort(why)
                    return why is not None
                # the fault is held for its declared duration from when it was verified in (verification
                # waits for a scrape or two), so the ground-truth window is as long as the scenario says
                start = max(step.start, inj.verified_at - tl.t0) if inj.verified_at is not None else step.start
                tl.wait_until(start + step.duration, tick=spec.telemetry.step, check=stop)
            if inj.aborted:
                status, reason = "aborted", inj.aborted
        except FaultNotVerified as exc:
            return "not-verified", str(exc)
    return status, reason


def _collect(scenario: Any, testbed: Any, writer: CaseWriter, load_dir: Path, t0: float, t_end: float) -> None:
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
                             extra=extra)
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
                        ray_log_dirs=ray_dirs, pid_rank=pid_rank, start=t0 - 60, end=time.time())
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
    if not (writer.path / "ground_truth.json").exists():
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


def _load_phase(scenario: Any, testbed: Any, writer: CaseWriter, rec: Recorder, load_dir: Path) -> tuple[str, str | None, dict[str, Any]]:
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
        _collect(scenario, testbed, writer, load_dir, t0, extras["load_end"])
    return status, reason, extras


def run_scenario(scenario: Any, out_dir: Path, seed: int | None = None, *, progress: Progress | None = None,
                 deploy_kwargs: dict[str, Any] | None = None) -> Path:
    """Run one scenario into the case directory ``out_dir``; return it (finalized, whatever the status).

    Raises the ChaosbenchError that failed the case after finalizing it, and ``Interrupted``
    (the case stays ``<out_dir>.partial``) on Ctrl-C/SIGTERM; the testbed is torn down in every case.
    """
    import yaml

    from harness.backends import BACKENDS
    from harness.collect.manifest import build_manifest

    scenario = with_seed(scenario, seed)
    out_dir = Path(out_dir)
    writer = CaseWriter(out_dir)
    run_dir = out_dir.parent / f".{out_dir.name}.run-{time.strftime('%Y%m%d%H%M%S')}"
    rec = Recorder(writer, progress)
    writer.write_text("scenario.resolved.yaml", yaml.safe_dump(scenario.dump(), sort_keys=False))
    dep = scenario.spec.deployment
    testbed, error, status, reason, extras = None, None, "failed", None, {}
    try:
        with _signals():
            with rec.stage("deploy", backend=dep.backend, engine=dep.engine):
                testbed = BACKENDS.get(dep.backend)(scenario, run_dir, **(deploy_kwargs or {}))
            writer.write_json("topology.json", topology_of(scenario, testbed).to_json())
            extras["engine"] = engine_of(scenario, testbed)
            status, reason, loaded = _load_phase(scenario, testbed, writer, rec, run_dir / "load")
            extras.update(loaded)
    except KeyboardInterrupt:
        error = Interrupted(f"interrupted; testbed torn down, partial case left at {writer.path}")
    except Exception as exc:  # noqa: BLE001 - finalize as failed, then re-raise
        error, reason = exc, f"{type(exc).__name__}: {exc}" if not isinstance(exc, ChaosbenchError) else str(exc)
    finally:
        with _signals_held():
            if testbed is not None:
                with rec.stage("teardown"):
                    left = testbed.teardown()
                extras["teardown_leftovers"] = left.describe() if hasattr(left, "describe") else \
                    ("; ".join(left) or "nothing") if isinstance(left, list) else "unknown"
    if isinstance(error, Interrupted):
        writer.event("run", "point", "failed", error="interrupted")
        raise error
    manifest = build_manifest(scenario, seed=scenario.spec.workload.seed, run_id=run_dir.name,
                              timings=rec.timings, **extras, **({"reason": reason} if reason else {}))
    writer.finalize(dict(manifest), status)  # type: ignore[arg-type]
    if error is not None:
        raise error
    return out_dir


def run_suite(suite: Any, out_root: Path, *, suite_path: Path | None = None, progress: Progress | None = None,
              on_case: Callable[[int, int, str], None] | None = None) -> list[Path]:
    """Run every (scenario x repetition x seed) of a suite into ``<out_root>/<run-id>/cases/<scenario>-r<rep>/``.

    ``suite``: a suite file, or a loaded Suite plus its ``suite_path`` (scenario entries are relative to it).
    A failed case is recorded (status failed) and the suite goes on; Ctrl-C stops the suite.
    """
    from harness.errors import InputInvalid
    from harness.scenario import expand_suite, load_suite

    if isinstance(suite, (str, Path)):
        suite_path, suite = Path(suite), load_suite(suite)
    if suite_path is None:
        raise InputInvalid("run_suite: give the suite file (its scenario entries are relative to it)")
    runs = expand_suite(suite, Path(suite_path))
    run_root = Path(out_root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{suite.metadata.name}" / "cases"
    run_root.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for i, (scenario, rep, seed) in enumerate(runs):
        name = f"{scenario.metadata.name}-r{rep}"
        if on_case:
            on_case(i, len(runs), name)
        try:
            out.append(run_scenario(scenario, run_root / name, seed, progress=progress))
        except Interrupted:
            raise
        except ChaosbenchError:
            if (run_root / name).is_dir():
                out.append(run_root / name)
    return out
