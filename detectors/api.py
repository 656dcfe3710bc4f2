"""The detector contract, declared once.

A detector is a callable ``detect(case: CaseView) -> Result``. ``CaseView``
(chaosbench.case) gives metrics, logs, traces, load records, topology and the
injection time, and no ground truth. Built-in detectors, RCAEval adapters and
third-party plugins all satisfy this contract; ``run_detector`` wraps a call so
that one failing method never stops an evaluation.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from chaosbench.case import CaseView

ResultStatus = Literal["ok", "failed", "unavailable", "timeout"]


@dataclass(frozen=True)
class RankedComponent:
    """One entry of a ranking: a component as named in telemetry (``node-1``, ``rank-2``,
    ``ingress``), optionally the metric that pointed at it, and a score (higher = more suspect)."""

    component: str
    score: float
    metric: str | None = None
    thread: str | None = None


@dataclass(frozen=True)
class AnomalousEvent:
    """A localized anomalous trace event (times in microseconds, as in Chrome traces)."""

    component: str  # rank-2
    worker: str  # raw value of the worker key (e.g. the pid)
    thread: str
    name: str
    ts: float
    dur: float
    expected_dur: float
    score: float
    path: str = ""


@dataclass(frozen=True)
class Result:
    """A detector's answer for one case."""

    method: str
    ranking: tuple[RankedComponent, ...] = ()
    anomalous: bool | None = None  # case-level verdict, for detectors that give one
    events: tuple[AnomalousEvent, ...] = ()
    explanation: str | None = None
    detected_at: float | None = None  # unix s of the first anomaly, for time to detection
    runtime_s: float = 0.0
    status: ResultStatus = "ok"
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def components(self) -> list[str]:
        """Ranked component names, best first, without repeats."""
        seen: dict[str, None] = {}
        for rc in self.ranking:
            seen.setdefault(rc.component, None)
        return list(seen)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Result:
        obj = dict(obj)
        obj["ranking"] = tuple(RankedComponent(**r) for r in obj.get("ranking", ()))
        obj["events"] = tuple(AnomalousEvent(**e) for e in obj.get("events", ()))
        return cls(**obj)

    @classmethod
    def failure(cls, method: str, error: str, status: ResultStatus = "failed", runtime_s: float = 0.0) -> Result:
        return cls(method=method, status=status, error=error, runtime_s=runtime_s)


Detector = Callable[[CaseView], Result]


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_detector(name: str, detect: Detector, case: CaseView) -> Result:
    """Call a detector, time it, and turn any exception or bad return into a failed Result."""
    start = time.perf_counter()
    try:
        result = detect(case)
    except Exception as exc:  # noqa: BLE001 - a crashing plugin is recorded, not fatal
        return replace(
            Result.failure(name, one_line(exc), runtime_s=time.perf_counter() - start),
            extra={"traceback": traceback.format_exc()},
        )
    runtime = time.perf_counter() - start
    if not isinstance(result, Result):
        return Result.failure(name, f"returned {type(result).__name__}, expected chaosbench.detectors.api.Result", runtime_s=runtime)
    return replace(result, method=name, runtime_s=result.runtime_s or runtime)
