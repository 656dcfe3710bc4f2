"""The injector interface: one module per fault id, four steps plus a preflight.

Each module ``harness/faults/<id with _>.py`` defines::

    SPEC = FAULTS["<id>"]                                    # the catalog entry
    preflight(testbed, step) -> None                         # raise PreflightFailed with the reason
    prepare(testbed, step, key) -> Handle                    # no side effect: everything needed to undo
    inject(handle, testbed) -> Handle                        # make the fault; returns the handle (+ pids)
    verify(handle, testbed) -> Evidence | None               # one poll: evidence once the signal is seen
    recover(handle) -> None                                  # idempotent; works from the handle alone

``prepare`` comes before ``inject`` so the lifecycle can journal the handle BEFORE anything changes: a crash in
the middle of ``inject`` still leaves a journal entry that ``recover`` can undo (helper processes are found by
their environment marker, rules by their comment, knobs are restored to the values recorded in ``prepare``).
A handle is a JSON object (TypedDict), so recovery can run in another process after a crash.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, Protocol, TypedDict

from harness.backends.base import Testbed
from harness.faults.catalog import FAULT_IDS, FaultSpec, get_fault


class Handle(TypedDict):
    """What every handle has; each fault module extends it with what its recovery needs."""

    fault_id: str
    key: str  # unique per injection: marks processes (env), rules (comment), qdiscs
    component: str  # the target as named in telemetry: rank-2, node-1


@dataclass(frozen=True)
class Evidence:
    """The verify signal as observed: which signal, the value seen and a human-readable line."""

    signal: str
    value: float
    detail: str
    extra: dict[str, float] = field(default_factory=dict)
    at: float | None = None  # when the signal happened, if the probe knows it (a log line's time); else when seen

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Injector(Protocol):
    SPEC: FaultSpec

    def preflight(self, testbed: Testbed, step: Any) -> None: ...

    def prepare(self, testbed: Testbed, step: Any, key: str) -> Handle: ...

    def inject(self, handle: Any, testbed: Testbed) -> Handle: ...

    def verify(self, handle: Any, testbed: Testbed) -> Evidence | None: ...

    def recover(self, handle: Any) -> None: ...


def module_name(fault_id: str) -> str:
    return "harness.faults." + fault_id.replace("-", "_")


def injector(fault_id: str) -> Injector:
    """The injector module of ``fault_id`` (unknown ids raise InputInvalid with a suggestion)."""
    get_fault(fault_id)
    module: ModuleType = importlib.import_module(module_name(fault_id))
    return module  # type: ignore[return-value]


def injectors() -> dict[str, Injector]:
    return {fid: injector(fid) for fid in FAULT_IDS}


def base_handle(spec: FaultSpec, step: Any, key: str) -> Handle:
    return Handle(fault_id=spec.id, key=key, component=step.target.component)
