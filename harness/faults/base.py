"""The fault module contract: one module per fault id, its spec, four local steps plus a preflight, and its
cluster action.

Each module (``harness/faults/<id with _>.py``, or a plugin's, see ``chaosbench.faults.catalog``) defines::

    SPEC = FaultSpec(...)                                    # chaosbench.faults.spec: what the fault is and takes
    preflight(testbed, step) -> None                         # raise PreflightFailed with the reason
    prepare(testbed, step, key) -> Handle                    # no side effect: everything needed to undo
    inject(handle, testbed) -> Handle                        # make the fault; returns the handle (+ pids)
    verify(handle, testbed) -> Evidence | None               # one poll: evidence once the signal is seen
    recover(handle) -> None                                  # idempotent; works from the handle alone
    cluster(step, kit) -> ClusterParts                       # k8s: Chaos Mesh objects / fault-agent commands

``prepare`` comes before ``inject`` so the lifecycle can journal the handle BEFORE anything changes: a crash in
the middle of ``inject`` still leaves a journal entry that ``recover`` can undo (helper processes are found by
their environment marker, rules by their comment, knobs are restored to the values recorded in ``prepare``).
A handle is a JSON object (TypedDict), so recovery can run in another process after a crash.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from chaosbench.backends.base import Testbed

if TYPE_CHECKING:
    from chaosbench.backends.k8s.faults import ClusterKit, ClusterParts
    from chaosbench.faults.spec import FaultSpec
    from chaosbench.scenario import FaultStep


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
    """The five local steps (a fault module, or a backend's adapter such as the k8s one)."""

    SPEC: FaultSpec

    def preflight(self, testbed: Testbed, step: FaultStep) -> None: ...

    def prepare(self, testbed: Testbed, step: FaultStep, key: str) -> Handle: ...

    def inject(self, handle: Any, testbed: Testbed) -> Handle: ...

    def verify(self, handle: Any, testbed: Testbed) -> Evidence | None: ...

    def recover(self, handle: Any) -> None: ...


class FaultModule(Injector, Protocol):
    """A fault module: the local steps plus its cluster action."""

    def cluster(self, step: FaultStep, kit: ClusterKit) -> ClusterParts: ...


def injector(fault_id: str) -> Injector:
    """The fault module of ``fault_id``, shipped or plugin (unknown ids raise InputInvalid with a suggestion)."""
    from chaosbench.faults.catalog import fault_module

    return fault_module(fault_id)


def base_handle(spec: FaultSpec, step: FaultStep, key: str) -> Handle:
    return Handle(fault_id=spec.id, key=key, component=step.target.component)
