"""One fault's lifecycle: preflight, journal, inject, verify, hold (the caller's block), always recover; and a
case's fault windows (``hold_faults``: each fault of the scenario injected at its start, recovered at its end).

    with injected(testbed, step, writer, index) as fault:
        ...hold for step.duration; on a stop condition: fault.abort("p99 latency > 5 s")...

On enter: preflight (PreflightFailed: nothing was changed), prepare the handle, journal it (case dir + global
recovery dir, see journal.py), inject, poll ``verify`` until ``step.verify.timeout``. The verified time is the
injection start: it goes to inject_time.txt and ground_truth.json. Not verified: recovered at once, ground
truth says ``verified: false``, and ``FaultNotVerified`` is raised if ``step.verify.required`` (case status
"not-verified"). On exit, whatever happened (exception, KeyboardInterrupt, SIGTERM): recover with SIGINT and
SIGTERM held back, record the recovery time as the ground truth's end, mark the journal entry done. A SIGKILL
leaves the journal entry for ``replay_fault_journals``. All events use stages ``fault.*`` (hidden from
detectors by CaseView). The fault's injector comes from the testbed (``Testbed.injector``): the local modules,
or the k8s backend's Chaos Mesh objects and fault agent.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chaosbench import signals
from chaosbench.backends.base import Testbed
from chaosbench.case import CaseStatus, CaseWriter, GroundTruth, atomic_write_json
from chaosbench.errors import ChaosbenchError, FaultNotVerified
from chaosbench.faults import targets
from chaosbench.faults.base import Evidence, Handle, Injector
from chaosbench.faults.catalog import FaultSpec, get_fault
from chaosbench.faults.journal import Journal
from chaosbench.stages import stage

if TYPE_CHECKING:
    from chaosbench.scenario import FaultStep, ScenarioSpec
    from chaosbench.timeline import Timeline

VERIFY_POLL_S = 0.25

@dataclass
class Injection:
    """The live fault, handed to the runner's block."""

    fault_id: str
    component: str
    key: str
    requested_at: float
    verified_at: float | None = None
    evidence: Evidence | None = None
    recovered_at: float | None = None
    aborted: str | None = None
    _on_abort: Callable[[str], None] | None = field(default=None, repr=False)

    @property
    def verified(self) -> bool:
        return self.verified_at is not None

    def abort(self, reason: str) -> None:
        """A stop condition held: record it; the runner then leaves the ``with`` block early."""
        if self.aborted is None:
            self.aborted = reason
            if self._on_abort:
                self._on_abort(reason)


def make_key(writer: CaseWriter, index: int, fault_id: str) -> str:
    return f"{writer.final_dir.name}.{index}.{fault_id}.{uuid.uuid4().hex[:6]}"


def ground_truth(testbed: Testbed, step: FaultStep, spec: FaultSpec, start: float | None, end: float | None,
                 verified: bool) -> GroundTruth:
    """The step's target as the testbed placed it: a rank's node, or for a replica or a stage its ranks (global
    numbering) and the node that holds them all (None when they span nodes)."""
    from chaosbench.backends import backend

    target, local = step.target, backend(testbed.backend).fault_site == "local"
    truth = GroundTruth(
        fault_id=spec.id, fault_class=spec.fault_class, component=target.component, node=target.node,
        rank=target.rank, start=start, end=end, mechanism=spec.local_mechanism if local else spec.cluster_mechanism,
        realism=spec.local_realism if local else "real", verified=verified,
    )
    if target.node is None:
        hit = targets.ranks(testbed, step)
        nodes = {r.node for r in hit}
        truth["node"] = nodes.pop() if len(nodes) == 1 else None
        if target.rank is None:
            truth["ranks"] = [r.index for r in hit]
    return truth


def _poll_verify(mod: Injector, handle: Handle, testbed: Testbed, timeout: float) -> tuple[Evidence | None, str]:
    deadline, last_error = time.monotonic() + timeout, ""
    while True:
        try:
            evidence = mod.verify(handle, testbed)
        except Exception as exc:  # noqa: BLE001 - a failing probe is "not seen yet"; the last error is kept
            evidence, last_error = None, f"{type(exc).__name__}: {exc}"
        if evidence is not None or time.monotonic() >= deadline:
            return evidence, last_error
        time.sleep(VERIFY_POLL_S)


def _recover(mod: Injector, handle: Handle, journal: Journal, writer: CaseWriter) -> str | None:
    """Recover (retrying once); returns the error text if it still failed."""
    with stage(writer, "fault.recover") as st:
        error = None
        for attempt in (1, 2):
            try:
                mod.recover(handle)
                error = None
                break
            except Exception as exc:  # noqa: BLE001 - recorded, retried, then reported
                error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.5 * attempt)
        if error is None:
            journal.done()
        else:
            journal.failed(error)
            st.fail(error)
    return error


def _write_truth(writer: CaseWriter, index: int, truth: GroundTruth) -> None:
    """The first fault of a case is its ground truth; an overlapping second one (compound case) is kept beside it."""
    if index == 0:
        writer.write_ground_truth(truth)
    else:
        atomic_write_json(writer.labels_path / f"ground_truth-{index}.json", truth)


def _verify_into_case(mod: Injector, handle: Handle, testbed: Testbed, step: FaultStep, spec: FaultSpec,
                      writer: CaseWriter, inj: Injection, index: int) -> None:
    with stage(writer, "fault.verify", {"timeout_s": step.verify.timeout, "signal": spec.verify_signal}) as st:
        evidence, last_error = _poll_verify(mod, handle, testbed, step.verify.timeout)
        if evidence is not None:
            seen = time.time()  # a timestamped signal (e.g. a log line) dates the fault better than the polling did
            at = evidence.at if evidence.at is not None and inj.requested_at <= evidence.at <= seen else seen
            inj.verified_at, inj.evidence = at, evidence
            if index == 0:
                writer.write_inject_time(inj.verified_at)
            _write_truth(writer, index, ground_truth(testbed, step, spec, inj.verified_at, None, True))
            st.end.update(duration_s=round(inj.verified_at - inj.requested_at, 3), detail=evidence.to_json())
            return
        if index == 0:
            writer.write_inject_time(inj.requested_at)
        _write_truth(writer, index, ground_truth(testbed, step, spec, inj.requested_at, None, False))
        reason = (f"{spec.id} on {inj.component}: verify signal ({spec.verify_signal}) not seen in "
                  f"{step.verify.timeout:g} s")
        st.fail(reason + (f"; last probe error: {last_error}" if last_error else ""))
    if step.verify.required:
        raise FaultNotVerified(reason)


@contextmanager
def injected(testbed: Testbed, step: FaultStep, writer: CaseWriter, index: int) -> Iterator[Injection]:
    """Inject ``step`` on ``testbed`` for the duration of the block; always recovered (see module doc)."""
    spec, mod = get_fault(step.id), testbed.injector(step.id)
    with stage(writer, "fault.preflight", {"fault_id": step.id, "target": step.target.component}):
        mod.preflight(testbed, step)  # PreflightFailed: nothing was changed
    key = make_key(writer, index, spec.id)
    handle = mod.prepare(testbed, step, key)
    journal = Journal(key, writer.labels_path)
    journal.begin(dict(handle))
    inj = Injection(spec.id, step.target.component, key, requested_at=time.time(),
                    _on_abort=lambda reason: writer.event("fault.abort", "point", detail={"reason": reason}))
    failure: BaseException | None = None
    with signals.interrupts_raise(override=False):  # the runner's handlers, if it runs us, stay in place
        try:
            with stage(writer, "fault.inject", {"key": key, "params": step.params.model_dump()}):
                try:
                    handle = mod.inject(handle, testbed)
                finally:
                    journal.update(dict(handle))
            _verify_into_case(mod, handle, testbed, step, spec, writer, inj, index)
            yield inj
        except BaseException as exc:
            failure = exc
            if not isinstance(exc, ChaosbenchError | KeyboardInterrupt | GeneratorExit):
                writer.event("fault", "point", "failed", error=f"{type(exc).__name__}: {exc}",
                             traceback=traceback.format_exc())
            raise
        finally:
            with signals.held():
                error = _recover(mod, handle, journal, writer)
                inj.recovered_at = time.time()
                _write_truth(writer, index, ground_truth(testbed, step, spec, inj.verified_at or inj.requested_at,
                                                         inj.recovered_at, inj.verified))
            if error is not None and failure is None:
                raise ChaosbenchError(f"recovery of {spec.id} on {inj.component} failed: {error}; "
                                      f"run `chaosbench cleanup` (journal key {key})")


def hold_faults(spec: ScenarioSpec, testbed: Testbed, writer: CaseWriter,
                tl: Timeline) -> tuple[CaseStatus, str | None]:
    """Inject each fault of ``spec`` at its start and recover it at its end; faults may overlap (compound cases),
    so each injection's context is entered and left on its own. A fault is held for its declared duration from
    when it was verified (verification waits for a scrape or two), so the ground-truth window is as long as
    declared. Returns (status, reason): completed, aborted (a stop condition held) or not-verified."""
    from chaosbench.probes import StopWatch

    watch = StopWatch(testbed.prometheus_url, spec.stop_conditions, rewrite=testbed.promql)
    todo = sorted(range(len(spec.faults)), key=lambda i: spec.faults[i].start)
    live: dict[int, tuple[AbstractContextManager[Injection], Injection, float]] = {}  # index: (cm, Injection, end)
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
            except BaseException:  # every fault is recovered; the first error is the one raised
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
                cm: AbstractContextManager[Injection] = injected(testbed, step, writer, i)
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
