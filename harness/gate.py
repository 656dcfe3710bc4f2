"""The recovery gate: may the next case run on the testbed the previous case used?

Two halves, both must hold:
- residue: every rollback of the previous case held (the backend's ``fault_residue(case_id)``: no fault process,
  qdisc, iptables rule, cgroup limit, stopped process or device setting left);
- health: the engine serves again as it did when the testbed was new: ``HEALTHY_PASSES`` probe rounds in a row,
  each ``PROBE_REQUESTS`` short completions that all succeed with a median latency within
  ``LATENCY_FACTOR`` x (+ ``LATENCY_SLACK_S``) of the testbed's first baseline. A tensor-parallel request needs
  every rank, so a rank restarted by a fault passes only once it serves again.
A testbed that fails the gate within ``GATE_TIMEOUT_S`` is torn down and redeployed by the runner.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaosbench.backends.base import Testbed

PROBE_REQUESTS = 3
PROBE_MAX_TOKENS = 8
HEALTHY_PASSES = 2
LATENCY_FACTOR = 2.0
LATENCY_SLACK_S = 0.5
GATE_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Probe:
    latencies_s: tuple[float, ...]
    error: str | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.latencies_s) if self.latencies_s else float("inf")


def probe(api_url: str, model: str, n: int = PROBE_REQUESTS) -> Probe:
    """``n`` sequential short completions; the first failure ends the round."""
    import httpx

    body = {"model": model, "prompt": "the quick brown fox", "max_tokens": PROBE_MAX_TOKENS, "stream": False,
            "temperature": 0.0}
    out: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        try:
            httpx.post(f"{api_url}/v1/completions", json=body, timeout=REQUEST_TIMEOUT_S).raise_for_status()
        except httpx.HTTPError as exc:
            return Probe(tuple(out), f"{type(exc).__name__}: {exc}".splitlines()[0][:200])
        out.append(time.perf_counter() - t)
    return Probe(tuple(out))


def baseline(api_url: str, model: str) -> Probe:
    """The new testbed's reference: one warm-up round, then the measured one."""
    probe(api_url, model)
    return probe(api_url, model)


def within(p: Probe, reference: Probe) -> bool:
    return p.error is None and p.median_s <= LATENCY_FACTOR * reference.median_s + LATENCY_SLACK_S


def recovery_gate(testbed: Testbed, model: str, reference: Probe, previous_case: str | None,
                  timeout_s: float = GATE_TIMEOUT_S) -> tuple[str | None, dict[str, Any]]:
    """(None, detail) when the testbed may take the next case, else (the reason, detail)."""
    t0 = time.monotonic()
    residue: list[str] = []
    if previous_case is not None:
        for _ in range(3):  # a recovered process can take a moment to be reaped
            residue = testbed.fault_residue(previous_case)
            if not residue:
                break
            time.sleep(1.0)
    if residue:
        return "fault residue: " + "; ".join(residue[:5]), {"residue": residue}
    passes, last = 0, Probe(())
    while passes < HEALTHY_PASSES:
        last = probe(testbed.api_url, model)
        passes = passes + 1 if within(last, reference) else 0
        if passes < HEALTHY_PASSES and time.monotonic() - t0 > timeout_s:
            why = last.error or (f"median latency {last.median_s:.2f}s vs {reference.median_s:.2f}s "
                                 "when the testbed was new")
            return f"not healthy after {timeout_s:g}s: {why}", {"last_probe_s": list(last.latencies_s)}
        if passes == 0:
            time.sleep(1.0)
    return None, {"gate_s": round(time.monotonic() - t0, 2), "median_s": round(last.median_s, 3),
                  "reference_median_s": round(reference.median_s, 3)}
