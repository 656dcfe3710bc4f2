"""Synthetic case directories shaped like each fault of FAULTS.md (small, seeded).

Column names and shapes follow the real local testbed: the collector's ``<c>_<metric>`` columns
(counters already as ``:rate``, histograms as ``:mean``; a target it cannot scrape is forward-filled),
the emulated device's DCGM_* gauges (harness/engines/mini/device.py), the node exporter's cgroup and
veth counters (harness/backends/local/exporter.py). Topology: 2 nodes, tensor parallel 4 (rank-0/1 on
node-0, rank-2/3 on node-1), plus ingress and host. 1 s samples, 40 s before and 40 s after the
injection; a fault is held 25 s (as in scenarios/_base.yaml) and moves only what its mechanism moves.
Outpost's answer is a stub outpost.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chaosbench.case import CaseWriter, Topology
from chaosbench.detectors.api import AnomalousEvent, RankedComponent, Result

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
DCGM = "DCGM_FI_DEV_"
AR = "chaosbench_rank_allreduce_seconds:mean"
STEP = "chaosbench_rank_step_seconds:mean"
NODE = "chaosbench_node_"
HOLD = 25.0  # seconds the fault is held


def clean_frame(seed: int = 0, noise: float = 1.0) -> pd.DataFrame:
    """Steady state; ``noise`` scales every relative noise level (1.0: calm, 4.0: the +-40% of a busy box)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T0 - 40, T0 + 40, 1.0)
    n = len(t)

    def noisy(level: float, rel: float) -> np.ndarray:
        return np.clip(level * (1 + rel * noise * rng.standard_normal(n)), 0, None)

    cols: dict[str, np.ndarray] = {"time": t, "ingress_latency": noisy(0.2, 0.08), "ingress_error_rate": np.zeros(n)}
    cols["ingress_vllm:kv_cache_usage_perc"] = noisy(0.3, 0.05)
    cols["ingress_vllm:num_preemptions:rate"] = np.zeros(n)
    cols["ingress_vllm:time_to_first_token_seconds:mean"] = noisy(0.05, 0.1)
    for r in RANKS:
        util = noisy(50, 0.08)
        cols[f"{r}_{DCGM}SM_CLOCK"] = np.full(n, 1980.0)
        cols[f"{r}_{DCGM}GPU_UTIL"] = util
        cols[f"{r}_{DCGM}POWER_USAGE"] = 60 + util / 100 * 270
        cols[f"{r}_{DCGM}POWER_MGMT_LIMIT"] = np.full(n, 400.0)
        cols[f"{r}_{DCGM}CLOCKS_EVENT_REASONS"] = np.zeros(n)
        cols[f"{r}_{DCGM}FB_USED"] = np.full(n, 66062.0)
        cols[f"{r}_{DCGM}FB_FREE"] = np.full(n, 15497.0)
        cols[f"{r}_{DCGM}XID_ERRORS"] = np.zeros(n)
        cols[f"{r}_chaosbench_rank_restarts:rate"] = np.zeros(n)
        cols[f"{r}_{AR}"] = noisy(0.002, 0.15)
        cols[f"{r}_{STEP}"] = noisy(0.02, 0.1)
        cols[f"{r}_process_resident_memory_bytes"] = noisy(5e8, 0.01)
    for node in NODES:
        cols[f"{node}_{NODE}cpu_usage_seconds:rate"] = noisy(0.9, 0.1)
        cols[f"{node}_{NODE}cpu_throttled_periods:rate"] = np.zeros(n)
        cols[f"{node}_{NODE}memory_usage_bytes"] = noisy(4e9, 0.01)
        cols[f"{node}_{NODE}memory_major_faults:rate"] = np.zeros(n)
        cols[f"{node}_{NODE}network_transmit_bytes:rate"] = noisy(1e6, 0.1)
        cols[f"{node}_{NODE}network_receive_drop:rate"] = np.zeros(n)
        # a raw cumulative counter, as other collectors may deliver them
        cols[f"{node}_cpu_pressure_waiting_seconds_total"] = np.cumsum(noisy(0.05, 0.1))
    return pd.DataFrame(cols)


def _ev(comp: str, name: str, dur_ms: float, exp_ms: float, ts: float = T0 + 5) -> AnomalousEvent:
    return AnomalousEvent(comp, comp, "main", name, ts * 1e6, dur_ms * 1000, exp_ms * 1000, dur_ms / exp_ms,
                          f"ProfilerStep#1/{name}")


def _peers_wait(target: str, dur_ms: float = 40.0) -> list[AnomalousEvent]:
    return [_ev(r, "c10d::allreduce_", dur_ms, 2.0) for r in RANKS if r != target]


def _freeze(df: pd.DataFrame, comp: str, start: float, end: float, rates_zero: bool = True) -> None:
    """What the collector writes for a target it cannot scrape: gauges forward-filled, rates 0."""
    win = (df["time"] >= start) & (df["time"] < end)
    last = df.index[df["time"] < start][-1]
    for col in [c for c in df.columns if c.startswith(f"{comp}_")]:
        df.loc[win, col] = 0.0 if col.endswith(":rate") and rates_zero else df.at[last, col]


def _cumulative(df: pd.DataFrame, col: str, win: pd.Series, rate: float) -> None:
    inc = np.diff(df[col].to_numpy(), prepend=0.0)
    inc[win.to_numpy()] = rate
    df[col] = np.cumsum(inc)


def _gpu_power_cap(df, tgt, w, logs, events):
    df.loc[w, f"{tgt}_{DCGM}POWER_MGMT_LIMIT"] = 150.0
    df.loc[w, f"{tgt}_{DCGM}CLOCKS_EVENT_REASONS"] = 4.0
    df.loc[w, f"{tgt}_{DCGM}GPU_UTIL"] = 85.0
    df.loc[w, f"{tgt}_{DCGM}POWER_USAGE"] = 150.0
    events += [_ev(tgt, "aten::mm", 3.0, 1.0)] + _peers_wait(tgt)


def _gpu_clock_lock(df, tgt, w, logs, events):
    df.loc[w, f"{tgt}_{DCGM}SM_CLOCK"] = 500.0
    df.loc[w, f"{tgt}_{DCGM}GPU_UTIL"] = 90.0
    df.loc[w, f"{tgt}_{DCGM}POWER_USAGE"] = 60 + 0.9 * 270
    events += [_ev(tgt, "aten::mm", 4.0, 1.0)] + _peers_wait(tgt)


def _gpu_compute_contention(df, tgt, w, logs, events):
    """The co-located kernels keep the target's GPU busy and drawing more power (as the emulated device and
    the real testbed's dev cases show); the host's CPUs barely notice."""
    df.loc[w, f"{tgt}_{DCGM}GPU_UTIL"] = 100.0
    df.loc[w, f"{tgt}_{DCGM}POWER_USAGE"] = 60 + 270.0
    df.loc[w, f"{RANK_NODE[tgt]}_{NODE}cpu_usage_seconds:rate"] *= 1.1
    events += [_ev(tgt, "aten::mm", 2.5, 1.0), _ev(tgt, "aten::linear", 3.0, 1.2)] + _peers_wait(tgt, 20.0)


def _gpu_memory_pressure(df, tgt, w, logs, events):
    df.loc[w, f"{tgt}_{DCGM}FB_USED"] = 79927.0
    df.loc[w, f"{tgt}_{DCGM}FB_FREE"] = 1632.0
    df.loc[w, "ingress_vllm:kv_cache_usage_perc"] = 0.95
    df.loc[w, "ingress_vllm:num_preemptions:rate"] = 0.5
    events += [_ev(tgt, "aten::empty", 5.0, 0.5)]


def _gpu_xid_error(df, tgt, w, logs, events):
    _freeze(df, tgt, T0 + 1, T0 + 20)
    df.loc[df["time"] >= T0 + 20, f"{tgt}_{DCGM}XID_ERRORS"] = 79.0
    df.loc[(df["time"] >= T0 + 20) & (df["time"] < T0 + 25), f"{tgt}_chaosbench_rank_restarts:rate"] = 0.2
    logs.append({"time": T0 + 0.5, "component": tgt, "level": "ERROR",
                 "message": "NVRM: Xid (PCI:0000:03:00): 79, pid=4242, name=mini-rank-2, GPU has fallen off the bus."})
    logs.append({"time": T0 + 20, "component": "ingress", "level": "WARNING", "message": "rank-2 worker restarted"})
    events += _peers_wait(tgt, 900.0)


def _nccl_hang(df, tgt, w, logs, events):
    """A live hang: every rank sits in the collective (GPU busy spinning, no step or all-reduce completes, so
    their means hold), the target's telemetry stays up like its peers'; the peers wait in the transport
    (gloo:all_reduce), the target in the collective call with no transport op."""
    for r in RANKS:
        df.loc[w, f"{r}_{DCGM}GPU_UTIL"] = 100.0
        df.loc[w, f"{r}_{DCGM}POWER_USAGE"] = 230.0
        for col in (f"{r}_{AR}", f"{r}_{STEP}"):
            df.loc[w, col] = df.loc[df["time"] < T0, col].iloc[-1]
    events += [_ev(r, "allreduce", HOLD * 1000, 2.0) for r in RANKS]
    events += [_ev(r, "gloo:all_reduce", HOLD * 1000, 1.0) for r in RANKS if r != tgt]


def _interconnect_degradation(df, tgt, w, logs, events):
    df.loc[w, f"{tgt}_{NODE}network_transmit_bytes:rate"] = 1.5e5
    for i, r in enumerate(RANKS):  # every collective over the link stretches ~40x, whatever its size
        df.loc[w, f"{r}_{AR}"] *= 40
        events.append(_ev(r, "c10d::allreduce_", 2.0 * (i + 1) * 40, 2.0 * (i + 1)))
        events.append(_ev(r, "gloo:all_reduce", 0.5 * (i + 1) * 41, 0.5 * (i + 1)))


def _cpu_contention(df, tgt, w, logs, events):
    df.loc[w, f"{tgt}_{NODE}cpu_usage_seconds:rate"] = 1.9
    _cumulative(df, f"{tgt}_cpu_pressure_waiting_seconds_total", w, 0.9)
    events += [_ev(r, "aten::mm", 2.5, 1.0) for r in RANKS if RANK_NODE[r] == tgt]


def _cpu_throttle(df, tgt, w, logs, events):
    df.loc[w, f"{tgt}_{NODE}cpu_throttled_periods:rate"] = 8.0
    df.loc[w, f"{tgt}_{NODE}cpu_usage_seconds:rate"] = 0.25
    events += [_ev(r, "aten::mm", 4.0, 1.0) for r in RANKS if RANK_NODE[r] == tgt]


def _host_memory_pressure(df, tgt, w, logs, events):
    df.loc[w, f"{tgt}_{NODE}memory_usage_bytes"] = 1.2e10
    df.loc[w, f"{tgt}_{NODE}memory_major_faults:rate"] = 40.0
    df.loc[w, f"{tgt}_{NODE}cpu_usage_seconds:rate"] = 1.4
    events += [_ev(r, "aten::empty", 3.0, 0.3) for r in RANKS if RANK_NODE[r] == tgt]


def _network_delay(df, tgt, w, logs, events):
    df.loc[w, f"{tgt}_{NODE}network_transmit_bytes:rate"] = 4e5
    for i, r in enumerate(RANKS):  # every collective gains ~200 ms, whatever its size
        df.loc[w, f"{r}_{AR}"] += 0.2
        events.append(_ev(r, "c10d::allreduce_", 2.0 * (i + 1) + 200, 2.0 * (i + 1)))
        events.append(_ev(r, "gloo:all_reduce", 0.5 * (i + 1) + 201, 0.5 * (i + 1)))


SHAPES = {
    "gpu-power-cap": _gpu_power_cap,
    "gpu-clock-lock": _gpu_clock_lock,
    "gpu-compute-contention": _gpu_compute_contention,
    "gpu-memory-pressure": _gpu_memory_pressure,
    "gpu-xid-error": _gpu_xid_error,
    "nccl-hang": _nccl_hang,
    "interconnect-degradation": _interconnect_degradation,
    "cpu-contention": _cpu_contention,
    "cpu-throttle": _cpu_throttle,
    "host-memory-pressure": _host_memory_pressure,
    "network-delay": _network_delay,
}
SLOW_PEERS = {"gpu-power-cap", "gpu-clock-lock", "gpu-compute-contention", "cpu-contention", "cpu-throttle",
              "host-memory-pressure"}


def _ranking(events: list[AnomalousEvent]) -> tuple[RankedComponent, ...]:
    scores: dict[str, float] = {}
    for e in events:
        scores[e.component] = max(scores.get(e.component, 0.0), e.score)
    return tuple(RankedComponent(c, s) for c, s in sorted(scores.items(), key=lambda kv: -kv[1]))


def fault_frame(fault: str | None, seed: int = 0,
                noise: float = 1.0) -> tuple[pd.DataFrame, list[dict], list[AnomalousEvent]]:
    df = clean_frame(seed, noise)
    logs: list[dict] = []
    events: list[AnomalousEvent] = []
    if fault:
        tgt = FAULT_TARGET[fault]
        w = (df["time"] >= T0) & (df["time"] < T0 + HOLD)
        SHAPES[fault](df, tgt, w, logs, events)
        df.loc[w, "ingress_latency"] *= 3
        df.loc[w, "ingress_vllm:time_to_first_token_seconds:mean"] *= 3
        if fault in SLOW_PEERS:  # a slow rank or node: the others wait in all-reduce
            slow = {tgt} if tgt in RANKS else {r for r in RANKS if RANK_NODE[r] == tgt}
            for r in set(RANKS) - slow:
                df.loc[w, f"{r}_{AR}"] *= 15
    return df, logs, events


def write_case(path: Path, fault: str | None, *, seed: int = 0, outpost: str = "stub",
               events: list[AnomalousEvent] | None = None, frame: pd.DataFrame | None = None,
               logs: list[dict] | None = None, noise: float = 1.0, timeline: list[dict] | None = None) -> Path:
    """A case for ``fault`` (None: clean run). outpost: "stub" (writes outpost.json) or "none".
    ``timeline``: events.jsonl records (with their own ``t``)."""
    df, fault_logs, evs = fault_frame(fault, seed, noise)
    df = frame if frame is not None else df
    logs = fault_logs if logs is None else logs
    evs = evs if events is None else list(events)
    target = FAULT_TARGET.get(fault or "")
    w = CaseWriter(path)
    topo = Topology("local", "mini", NODES, RANKS, RANK_NODE, ("ingress", *NODES, *RANKS), True)
    w.write_json("topology.json", topo.to_json())
    w.write_inject_time(T0)
    w.write_text("data.csv", df.to_csv(index=False))
    w.write_text("logs.csv", pd.DataFrame(logs, columns=["time", "component", "level", "message"]).to_csv(index=False))
    w.write_ground_truth({"fault_id": fault, "fault_class": None, "component": target, "node": None, "rank": None,
                          "start": T0, "end": T0 + HOLD, "mechanism": None, "realism": None, "verified": True})
    with open(w.path / "events.jsonl", "a") as fh:
        fh.writelines(json.dumps(rec) + "\n" for rec in timeline or ())
    if outpost == "stub":
        result = Result("outpost", ranking=_ranking(evs), anomalous=bool(evs), events=tuple(evs))
        w.write_json("detectors/outpost.json", result.to_json())
    return w.finalize({"backend": "local"}, "completed")


@pytest.fixture
def make_case(tmp_path: Path) -> Callable[..., Path]:
    def make(fault: str | None, name: str | None = None, **kw) -> Path:
        return write_case(tmp_path / (name or (fault or "clean")), fault, **kw)

    return make
