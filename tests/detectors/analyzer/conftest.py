"""Synthetic case directories shaped like each fault of FAULTS.md (small, seeded).

Topology: 2 nodes, tensor parallel 4 (rank-0/1 on node-0, rank-2/3 on node-1), plus ingress.
Metrics: 1 s samples, 300 s before and 90 s after the injection; a fault moves only the
signals its mechanism moves (FAULTS.md), for 60 s. Outpost's answer is a stub outpost.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detectors.api import AnomalousEvent, RankedComponent, Result
from harness.case import CaseWriter, Topology

T0 = 1_800_000_000.0
RANKS = ("rank-0", "rank-1", "rank-2", "rank-3")
NODES = ("node-0", "node-1")
RANK_NODE = {"rank-0": "node-0", "rank-1": "node-0", "rank-2": "node-1", "rank-3": "node-1"}
FAULT_TARGET = {
    "gpu-power-cap": "rank-2",
    "gpu-clock-lock": "rank-1",
    "gpu-compute-contention": "rank-3",
    "gpu-memory-pressure": "rank-0",
    "gpu-xid-error": "rank-2",
    "nccl-hang": "rank-1",
    "interconnect-degradation": "node-1",
    "cpu-contention": "node-0",
    "cpu-throttle": "node-1",
    "host-memory-pressure": "node-0",
    "network-delay": "node-1",
}


def _gauge(rng, n, level, rel=0.03):
    return level * (1 + rel * rng.standard_normal(n))


def _counter(rng, rate, rel=0.1):
    inc = np.clip(rate * (1 + rel * rng.standard_normal(len(rate))), 0, None)
    return np.cumsum(inc)


def clean_frame(seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Steady-state telemetry; returns the frame and the per-column rates of counters (to edit before cumsum)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T0 - 300, T0 + 90, 1.0)
    n = len(t)
    cols: dict[str, np.ndarray] = {"time": t, "ingress_latency": _gauge(rng, n, 0.2, 0.08)}
    cols["ingress_vllm:kv_cache_usage_perc"] = _gauge(rng, n, 0.3, 0.05)
    for r in RANKS:
        cols[f"{r}_DCGM_FI_DEV_SM_CLOCK"] = _gauge(rng, n, 1980, 0.005)
        cols[f"{r}_DCGM_FI_DEV_POWER_USAGE"] = _gauge(rng, n, 300, 0.03)
        cols[f"{r}_DCGM_FI_DEV_FB_USED"] = _gauge(rng, n, 20000, 0.005)
        cols[f"{r}_DCGM_FI_DEV_XID_ERRORS"] = np.zeros(n)
    for node in NODES:
        cols[f"{node}_memory_usage_bytes"] = _gauge(rng, n, 4e9, 0.01)
    rates = {"ingress_vllm:num_preemptions_total": np.zeros(n)}
    for node in NODES:
        rates[f"{node}_cpu_usage_seconds_total"] = np.full(n, 1.0)
        rates[f"{node}_cpu_throttled_periods_total"] = np.zeros(n)
        rates[f"{node}_pressure_cpu_waiting_seconds_total"] = np.full(n, 0.05)
        rates[f"{node}_pressure_memory_waiting_seconds_total"] = np.full(n, 0.001)
        rates[f"{node}_network_transmit_bytes_total"] = np.full(n, 1e6)
        rates[f"{node}_network_drops_total"] = np.zeros(n)
    return pd.DataFrame(cols), rates


def _ev(comp: str, name: str, dur_ms: float, exp_ms: float, ts: float = T0 + 5) -> AnomalousEvent:
    return AnomalousEvent(comp, comp, "main", name, ts * 1e6, dur_ms * 1000, exp_ms * 1000, dur_ms / exp_ms, f"step/{name}")


def _peers_wait(target: str, dur_ms: float = 40.0) -> list[AnomalousEvent]:
    return [_ev(r, "c10d::allreduce_", dur_ms, 2.0) for r in RANKS if r != target]


def _shape_fault(fault: str, tgt: str, df: pd.DataFrame, rates: dict, logs: list, events: list) -> None:
    """Move the signals each fault moves, in the 60 s after the injection."""
    w = (df["time"] >= T0) & (df["time"] < T0 + 60)
    slow_latency = True
    if fault == "gpu-power-cap":
        df.loc[w, f"{tgt}_DCGM_FI_DEV_POWER_USAGE"] = 150.0
        df.loc[w, f"{tgt}_DCGM_FI_DEV_SM_CLOCK"] = 1300.0
        events += [_ev(tgt, "aten::mm", 3.0, 1.0)] + _peers_wait(tgt)
    elif fault == "gpu-clock-lock":
        df.loc[w, f"{tgt}_DCGM_FI_DEV_SM_CLOCK"] = 500.0
        events += [_ev(tgt, "aten::mm", 4.0, 1.0)] + _peers_wait(tgt)
    elif fault == "gpu-compute-contention":
        rates[f"{RANK_NODE[tgt]}_cpu_usage_seconds_total"][w.to_numpy()] = 1.6
        events += [_ev(tgt, "aten::mm", 2.5, 1.0), _ev(tgt, "aten::linear", 3.0, 1.2)] + _peers_wait(tgt, 20.0)
    elif fault == "gpu-memory-pressure":
        df.loc[w, f"{tgt}_DCGM_FI_DEV_FB_USED"] = 70000.0
        df.loc[w, "ingress_vllm:kv_cache_usage_perc"] = 0.95
        rates["ingress_vllm:num_preemptions_total"][w.to_numpy()] = 0.5
        events += [_ev(tgt, "aten::empty", 5.0, 0.5)]
    elif fault == "gpu-xid-error":
        df.loc[w, f"{tgt}_DCGM_FI_DEV_XID_ERRORS"] = 79.0
        gap = (df["time"] >= T0 + 2) & (df["time"] < T0 + 40)
        for col in [c for c in df.columns if c.startswith(f"{tgt}_") and "XID" not in c]:
            df.loc[gap, col] = np.nan
        logs.append({"time": T0 + 1, "component": tgt, "level": "ERROR",
                     "message": "NVRM: Xid (PCI:0000:3b:00): 79, pid=4242, GPU has fallen off the bus."})
        logs.append({"time": T0 + 40, "component": tgt, "level": "WARNING", "message": "worker restarted after device error"})
        events += _peers_wait(tgt, 900.0)
    elif fault == "nccl-hang":
        gap = (df["time"] >= T0 + 1) & (df["time"] < T0 + 60)
        for col in [c for c in df.columns if c.startswith(f"{tgt}_")]:
            df.loc[gap, col] = np.nan
        events += [_ev(tgt, "aten::mm", 30_000.0, 1.0)] + _peers_wait(tgt, 30_000.0)
    elif fault == "interconnect-degradation":
        rates[f"{tgt}_network_transmit_bytes_total"][w.to_numpy()] = 1.5e5
        for i, r in enumerate(RANKS):  # every collective over the link stretches ~40x
            events.append(_ev(r, "c10d::allreduce_", 2.0 * (i + 1) * 40, 2.0 * (i + 1)))
            events.append(_ev(r, "gloo:all_reduce", 0.5 * (i + 1) * 41, 0.5 * (i + 1)))
    elif fault == "cpu-contention":
        rates[f"{tgt}_cpu_usage_seconds_total"][w.to_numpy()] = 2.0
        rates[f"{tgt}_pressure_cpu_waiting_seconds_total"][w.to_numpy()] = 0.9
        events += [_ev(r, "aten::mm", 2.5, 1.0) for r in RANKS if RANK_NODE[r] == tgt]
    elif fault == "cpu-throttle":
        rates[f"{tgt}_cpu_throttled_periods_total"][w.to_numpy()] = 8.0
        rates[f"{tgt}_cpu_usage_seconds_total"][w.to_numpy()] = 0.25
        events += [_ev(r, "aten::mm", 4.0, 1.0) for r in RANKS if RANK_NODE[r] == tgt]
    elif fault == "host-memory-pressure":
        df.loc[w, f"{tgt}_memory_usage_bytes"] = 1.2e10
        rates[f"{tgt}_pressure_memory_waiting_seconds_total"][w.to_numpy()] = 0.4
        rates[f"{tgt}_cpu_usage_seconds_total"][w.to_numpy()] = 1.5
        events += [_ev(r, "aten::empty", 3.0, 0.3) for r in RANKS if RANK_NODE[r] == tgt]
    elif fault == "network-delay":
        df[f"{tgt}_network_rtt_seconds"] = np.where(w, 0.2, 0.0005 * (1 + 0.05 * np.sin(np.arange(len(df)))))
        rates[f"{tgt}_network_drops_total"][w.to_numpy()] = 3.0
        for i, r in enumerate(RANKS):  # every collective gains ~200 ms whatever its size
            events.append(_ev(r, "c10d::allreduce_", 2.0 * (i + 1) + 200, 2.0 * (i + 1)))
            events.append(_ev(r, "gloo:all_reduce", 0.5 * (i + 1) + 201, 0.5 * (i + 1)))
    else:
        slow_latency = False
    if slow_latency:
        df.loc[w, "ingress_latency"] = df.loc[w, "ingress_latency"] * 3


def _ranking(events: list[AnomalousEvent]) -> tuple[RankedComponent, ...]:
    scores: dict[str, float] = {}
    for e in events:
        scores[e.component] = max(scores.get(e.component, 0.0), e.score)
    return tuple(RankedComponent(c, s) for c, s in sorted(scores.items(), key=lambda kv: -kv[1]))


def write_case(path: Path, fault: str | None, *, seed: int = 0, outpost: str = "stub",
               events: list[AnomalousEvent] | None = None) -> Path:
    """A case for ``fault`` (None: clean run). outpost: "stub" (outpost.json), "none" (no Outpost answer)."""
    df, rates = clean_frame(seed)
    logs: list[dict] = []
    evs: list[AnomalousEvent] = []
    target = FAULT_TARGET.get(fault or "", "")
    if fault:
        _shape_fault(fault, target, df, rates, logs, evs)
    for col, rate in rates.items():
        df[col] = _counter(np.random.default_rng(seed + len(col)), rate)
    if events is not None:
        evs = list(events)
    w = CaseWriter(path)
    topo = Topology("local", "mini", NODES, RANKS, RANK_NODE, ("ingress", *NODES, *RANKS), True)
    w.write_json("topology.json", topo.to_json())
    w.write_inject_time(T0)
    w.write_text("data.csv", df.to_csv(index=False))
    w.write_text("logs.csv", pd.DataFrame(logs, columns=["time", "component", "level", "message"]).to_csv(index=False))
    w.write_ground_truth({"fault_id": fault, "fault_class": None, "component": target or None, "node": None,
                          "rank": None, "start": T0, "end": T0 + 60, "mechanism": None, "realism": None,
                          "verified": True})
    if outpost == "stub":
        result = Result("outpost", ranking=_ranking(evs), anomalous=bool(evs), events=tuple(evs))
        w.write_json("detectors/outpost.json", result.to_json())
    return w.finalize({"backend": "local"}, "completed")


@pytest.fixture
def make_case(tmp_path: Path) -> Callable[..., Path]:
    def make(fault: str | None, name: str | None = None, **kw) -> Path:
        return write_case(tmp_path / (name or (fault or "clean")), fault, **kw)

    return make


@pytest.fixture
def outpost_json() -> Callable[[Path], dict]:
    return lambda case: json.loads((case / "detectors" / "outpost.json").read_text())

