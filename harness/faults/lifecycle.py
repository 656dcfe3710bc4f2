"""One fault's lifecycle: preflight, journal, inject, verify, hold (the caller's block), always recover.

    with injected(testbed, step, writer, index) as fault:
        ...hold for step.duration; on a stop condition: fault.abort("p99 latency > 5 s")...

On enter: preflight (PreflightFailed: nothing was changed), prepare the handle, journal it (case dir + global
recovery dir, see journal.py), inject, poll ``verify`` until ``step.verify.timeout``. The verified time is the
injection start: it goes to inject_time.txt and ground_truth.json. Not verified: recovered at once, ground
truth says ``verified: false``, and ``FaultNotVerified`` is raised if ``step.verify.required`` (case status
"not-verified"). On exit, whatever happened (exception, KeyboardInterrupt, SIGTERM): recover with SIGINT and
SIGTERM held back, record the recovery time as the ground truth's end, mark the journal entry done. A SIGKILL
leaves the journal entry for ``replay_fault_journals``. All events use stages ``fault.*`` (hidden from
detectors by CaseView).
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from harness.backends.base import Testbed
from harness.case import CaseWriter, GroundTruth, atomic_write_json
from harness.errors import ChaosbenchError, FaultNotVerified, PreflightFailed
from harness.faults.base import Evidence, Handle, Injector, injector
from harness.faults.catalog import FaultSpec, get_fault
from harness.faults.journal import Journal

VERIFY_POLL_S = 0.25


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` (recovery first) runs."""


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


def ground_truth(testbed: Testbed, step: Any, spec: FaultSpec, start: float | None, end: float | None,
                 verified: bool) -> GroundTruth:
    rank = step.target.rank
    node = step.target.node if rank is None else testbed.ranks[f"rank-{rank}"].node
    local = testbed.backend == "local"
    return GroundTruth(
        fault_id=spec.id, fault_class=spec.fault_class, component=step.target.component, node=node, rank=rank,
        start=start, end=end, mechanism=spec.local_mechanism if local else spec.cluster_mechanism,
        realism=spec.local_realism if local else "real", verified=verified,
    )


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM -> Terminated while the fault is in, unless somebody (the runner) already handles SIGTERM."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL, None
    ):
        yield
        return

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while recovering; they are delivered (and raise) right after."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


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
    t0 = time.time()
    writer.event("fault.recover", "start")
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
        writer.event("fault.recover", "end", duration_s=round(time.time() - t0, 3))
    else:
        journal.failed(error)
        writer.event("fault.recover", "end", "failed", error=error, duration_s=round(time.time() - t0, 3))
    return error


def _write_truth(writer: CaseWriter, index: int, truth: GroundTruth) -> None:
    """The first fault of a case is its ground truth; an overlapping second one (compound case) is kept beside it."""
    if index == 0:
        writer.write_ground_truth(truth)
    else:
        atomic_write_json(writer.labels_path / f"ground_truth-{index}.json", truth)


def _verify_into_case(mod: Injector, handle: Handle, testbed: Testbed, step: Any, spec: FaultSpec,
                      writer: CaseWriter, inj: Injection, index: int) -> None:
    writer.event("fault.verify", "start", detail={"timeout_s": step.verify.timeout, "signal": spec.verify_signal})
    evidence, last_error = _poll_verify(mod, handle, testbed, step.verify.timeout)
    if evidence is not None:
        seen = time.time()  # a timestamped signal (e.g. a log line) dates the fault better than the polling did
        at = evidence.at if evidence.at is not None and inj.requested_at <= evidence.at <= seen else seen
        inj.verified_at, inj.evidence = at, evidence
        if index == 0:
            writer.write_inject_time(inj.verified_at)
        _write_truth(writer, index, ground_truth(testbed, step, spec, inj.verified_at, None, True))
        writer.event("fault.verify", "end", duration_s=round(inj.verified_at - inj.requested_at, 3),
                     detail=evidence.to_json())
        return
    if index == 0:
        writer.write_inject_time(inj.requested_at)
    _write_truth(writer, index, ground_truth(testbed, step, spec, inj.requested_at, None, False))
    reason = f"{spec.id} on {inj.component}: verify signal ({spec.verify_signal}) not seen in {step.verify.timeout:g} s"
    writer.event("fault.verify", "end", "failed", error=reason + (f"; last probe error: {last_error}" if last_error
                                                                   else ""))
    if step.verify.required:
        raise FaultNotVerified(reason)


def _preflight(mod: Injector, testbed: Testbed, step: Any, writer: CaseWriter) -> None:
    writer.event("fault.preflight", "start", detail={"fault_id": step.id, "target": step.target.component})
    try:
        mod.preflight(testbed, step)
    except PreflightFailed as exc:
        writer.event("fault.preflight", "end", "failed", error=str(exc))
        raise
    writer.event("fault.preflight", "end")


@contextmanager
def injected(testbed: Testbed, step: Any, writer: CaseWriter, index: int) -> Iterator[Injection]:
    """Inject ``step`` on ``testbed`` for the duration of the block; always recovered (see module doc)."""
    # a backend with its own injectors (k8s: Chaos Mesh + fault agent) supplies them; else the local modules
    backend_injector = getattr(testbed, "injector", None)
    spec, mod = get_fault(step.id), (backend_injector or injector)(step.id)
    _preflight(mod, testbed, step, writer)
    key = make_key(writer, index, spec.id)
    handle = mod.prepare(testbed, step, key)
    journal = Journal(key, writer.labels_path)
    journal.begin(dict(handle))
    inj = Injection(spec.id, step.target.component, key, requested_at=time.time(),
                    _on_abort=lambda reason: writer.event("fault.abort", "point", detail={"reason": reason}))
    failure: BaseException | None = None
    with _sigterm_raises():
        try:
            writer.event("fault.inject", "start", detail={"key": key, "params": step.params.model_dump()})
            try:
                handle = mod.inject(handle, testbed)
            finally:
                journal.update(dict(handle))
            writer.event("fault.inject", "end", duration_s=round(time.time() - inj.requested_at, 3))
            _verify_into_case(mod, handle, testbed, step, spec, writer, inj, index)
            yield inj
        except BaseException as exc:
            failure = exc
            if not isinstance(exc, ChaosbenchError | KeyboardInterrupt | GeneratorExit):
                writer.event("fault", "point", "failed", error=f"{type(exc).__name__}: {exc}",
                             traceback=traceback.format_exc())
            raise
        finally:
            with _signals_held():
                error = _recover(mod, handle, journal, writer)
                inj.recovered_at = time.time()
                _write_truth(writer, index, ground_truth(testbed, step, spec, inj.verified_at or inj.requested_at,
                                                         inj.recovered_at, inj.verified))
            if error is not None and failure is None:
                raise ChaosbenchError(f"recovery of {spec.id} on {inj.component} failed: {error}; "
                                      f"run `chaosbench cleanup` (journal key {key})")
