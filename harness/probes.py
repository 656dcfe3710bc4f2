"""Steady-state probes and stop conditions: the scenario's PromQL, read against the testbed's Prometheus.

``probes_hold`` is the baseline gate before the first fault and the deviation check before the load ends (each
probe's values within its tolerance); ``StopWatch`` aborts a fault once a stop condition has held for its
``for``. The backend translates the queries to its metric names (``Testbed.promql``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chaosbench.scenario import Probe, StopCondition

Rewrite = Callable[[str], str]  # the backend's translation of a scenario query (Testbed.promql)


def promql(url: str, query: str) -> list[float]:
    """The values of an instant query (one per series)."""
    from prometheus_api_client import PrometheusConnect

    result = PrometheusConnect(url=url, disable_ssl=True).custom_query(query)
    if isinstance(result, list):
        return [float(r["value"][1]) for r in result if "value" in r]
    return []


def _same(query: str) -> str:
    return query


def probes_hold(url: str, probes: Sequence[Probe], rewrite: Rewrite = _same) -> str | None:
    """None if every probe is within tolerance, else the reason of the first that is not."""
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
    conditions: Sequence[StopCondition]
    since: dict[str, float] = field(default_factory=dict)
    rewrite: Rewrite = _same

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
