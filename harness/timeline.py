"""The case's clock: offsets from the load start, and the trace windows that fall due on the way.

``Timeline.wait_until(offset)`` sleeps to ``t0 + offset``; the trace windows' start/stop calls
(``Testbed.start_profile``/``stop_profile``) fall due on the way and run in one background thread, in order, so
a slow profiler never delays an injection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chaosbench.stages import Recorder

if TYPE_CHECKING:
    from chaosbench.backends.base import Testbed
    from chaosbench.scenario import Scenario

Action = tuple[float, str, Callable[[], None]]  # (offset from t0, stage name, call)


def trace_windows(scenario: Scenario) -> list[tuple[float, float]]:
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


def profile_actions(testbed: Testbed, windows: list[tuple[float, float]]) -> list[Action]:
    """The testbed's start_profile/stop_profile at the trace windows, in time order."""
    acts: list[Action] = [(s, "traces.start", testbed.start_profile) for s, _ in windows]
    acts += [(e, "traces.stop", testbed.stop_profile) for _, e in windows]
    return sorted(acts, key=lambda a: a[0])


@dataclass
class Timeline:
    """Sleeps to offsets from the load start ``t0``, firing the actions that fall due (see module doc)."""

    t0: float
    actions: list[Action]
    rec: Recorder
    duration: float
    _pool: ThreadPoolExecutor | None = None
    _futures: list[Future[None]] = field(default_factory=list)

    def run_due(self) -> None:
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
