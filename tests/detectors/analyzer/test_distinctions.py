"""The look-alike faults the dev split confused, told apart from what an operator sees:
host memory pressure vs CPU contention (memory growth), CPU vs GPU compute contention (host CPU vs the
GPU's power), network delay vs bandwidth loss (bytes per packet while the traffic collapses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chaosbench.case import CaseView, Topology
from chaosbench.detectors.analyzer import detect
from chaosbench.detectors.analyzer.context import AnalysisContext, MetricDeviation, Windows
from chaosbench.detectors.analyzer.findings import egress_queue_findings, family_of, segment_findings
from chaosbench.detectors.analyzer.knowledge import default_kb
from chaosbench.detectors.analyzer.output import parse

from .conftest import AR, DCGM, NODE, NODES, RANK_NODE, RANKS, T0, _ev, clean_frame, write_case

HOLD = (T0, T0 + 25)


def _window(df: pd.DataFrame) -> pd.Series:
    return (df["time"] >= HOLD[0]) & (df["time"] < HOLD[1])


def _answer(path: Path) -> tuple[str, str]:
    a = parse(detect(CaseView(path)).explanation)
    return a.fault_class, a.root_cause


def _node_slow(df: pd.DataFrame, node: str) -> list:
    """Every rank off ``node`` waits in all-reduce; Outpost saw one slow op on the node's first rank only."""
    w = _window(df)
    for r in RANKS:
        if RANK_NODE[r] != node:
            df.loc[w, f"{r}_{AR}"] *= 15
    df.loc[w, "ingress_latency"] *= 3
    first = next(r for r in RANKS if RANK_NODE[r] == node)
    return [_ev(first, "attention", 80.0, 16.0)] + [_ev(r, "allreduce", 50.0, 5.0) for r in RANKS
                                                     if RANK_NODE[r] != node]


# -- host memory pressure vs CPU contention ---------------------------------------------------------------

def test_memory_growth_makes_busy_cpus_memory_pressure(tmp_path: Path):
    df = clean_frame(1)
    w = _window(df)
    df.loc[w, f"node-1_{NODE}cpu_usage_seconds:rate"] = 1.9  # the memory hog and reclaim burn CPU too
    df.loc[w, f"node-1_{NODE}memory_usage_bytes"] = 9e9  # 4 GB -> 9 GB
    events = _node_slow(df, "node-1")
    assert _answer(write_case(tmp_path / "mem", None, frame=df, events=events)) == ("host-memory-pressure", "node-1")
    df.loc[w, f"node-1_{NODE}memory_usage_bytes"] = df.loc[~w, f"node-1_{NODE}memory_usage_bytes"].median()
    assert _answer(write_case(tmp_path / "cpu", None, frame=df, events=events)) == ("cpu-contention", "node-1")


def test_memory_growth_counts_when_outpost_saw_nothing(tmp_path: Path):
    """Outpost quiet: soft metrics are dropped, but a node's memory doubling is no load wobble."""
    df = clean_frame(2)
    df.loc[_window(df), f"node-0_{NODE}memory_usage_bytes"] = 1.0e10
    assert _answer(write_case(tmp_path / "q", None, frame=df, events=[])) == ("host-memory-pressure", "node-0")
    small = clean_frame(2)
    small.loc[_window(small), f"node-0_{NODE}memory_usage_bytes"] = 4.4e9  # +10 %: not pressure
    assert _answer(write_case(tmp_path / "s", None, frame=small, events=[]))[0] == "none"


# -- CPU contention vs GPU compute contention -------------------------------------------------------------

def test_busy_host_without_gpu_load_is_cpu_contention_even_if_one_rank_looks_slow(tmp_path: Path):
    df = clean_frame(3)
    df.loc[_window(df), f"node-0_{NODE}cpu_usage_seconds:rate"] = 1.9
    events = _node_slow(df, "node-0")  # Outpost flagged rank-0 only: looks isolated to one rank
    assert _answer(write_case(tmp_path / "c", None, frame=df, events=events)) == ("cpu-contention", "node-0")


def test_gpu_drawing_more_power_on_the_slow_rank_is_gpu_contention(tmp_path: Path):
    df = clean_frame(3)
    w = _window(df)
    df.loc[w, f"rank-0_{DCGM}GPU_UTIL"] = 100.0
    df.loc[w, f"rank-0_{DCGM}POWER_USAGE"] = 330.0
    events = _node_slow(df, "node-0")
    assert _answer(write_case(tmp_path / "g", None, frame=df, events=events)) == ("gpu-compute-contention", "rank-0")


def test_power_series_family_follows_its_direction():
    kb = default_kb()
    assert family_of(f"{DCGM}POWER_USAGE", kb, rising=False) == "power_usage"
    assert family_of(f"{DCGM}POWER_USAGE", kb, rising=True) == "gpu_power_up"
    assert family_of(f"{DCGM}POWER_USAGE", kb) == "power_usage"  # no direction given: the first match
    assert family_of(f"{DCGM}SM_CLOCK", kb, rising=True) is None  # a clock going up is no fault signal


# -- network delay vs interconnect (bandwidth) degradation ------------------------------------------------

def _ctx(devs: list[MetricDeviation]) -> AnalysisContext:
    topo = Topology("local", "mini", NODES, RANKS, RANK_NODE, ("ingress", *NODES, *RANKS), True)
    strong = tuple(d for d in devs if abs(d.z) >= 3)
    weak = tuple(d for d in devs if abs(d.z) < 3)
    return AnalysisContext("x", topo, T0, topo.components, "given", "", (), (), True, strong, weak, (), (),
                           Windows())


def _traffic(node: str, bytes_after: float, packets_after: float, z: float = -10.0) -> list[MetricDeviation]:
    return [MetricDeviation(node, f"{NODE}network_{d}_bytes:rate", 2e6, bytes_after, z, "rate")
            for d in ("transmit", "receive")] + \
           [MetricDeviation(node, f"{NODE}network_{d}_packets:rate", 2000.0, packets_after, z, "rate")
            for d in ("transmit", "receive")]


def test_bytes_per_packet_grades_bandwidth_vs_delay():
    bulk = segment_findings(_ctx(_traffic("node-1", 2e5, 80.0)))  # 1000 -> 2500 B per packet
    assert [(f.key, f.component) for f in bulk] == [("net_bulk_segments", "node-1")] and not bulk[0].weak
    small = segment_findings(_ctx(_traffic("node-1", 2e5, 300.0)))  # 1000 -> 667 B per packet
    assert [(f.key, f.component) for f in small] == [("net_small_segments", "node-1")]
    assert segment_findings(_ctx(_traffic("node-1", 2e5, 180.0))) == []  # x1.11: undecided
    assert segment_findings(_ctx(_traffic("node-1", 1.5e6, 300.0))) == []  # traffic did not collapse
    weak = segment_findings(_ctx(_traffic("node-1", 2e5, 80.0, z=-2.0)))
    assert weak and weak[0].weak


def _network_case(path: Path, packets_after: float) -> Path:
    """Both nodes' traffic collapses 10x (the link carries every collective); every rank's all-reduce is slow
    by the same amount, so the traces alone cannot tell a delay from a bandwidth cap."""
    df = clean_frame(4)
    w = _window(df)
    for node in NODES:
        for d in ("transmit", "receive"):
            df[f"{node}_{NODE}network_{d}_bytes:rate"] = np.where(w, 2e5, 2e6 * (1 + 0.02 * np.sin(df["time"])))
            df[f"{node}_{NODE}network_{d}_packets:rate"] = np.where(w, packets_after,
                                                                   2000 * (1 + 0.02 * np.cos(df["time"])))
    for r in RANKS:
        df.loc[w, f"{r}_{AR}"] *= 30
    df.loc[w, "ingress_latency"] *= 3
    events = [_ev(r, "allreduce", 120.0, 5.0) for r in RANKS]
    return write_case(path, None, frame=df, events=events)


def test_delay_keeps_packets_small_and_bandwidth_loss_fills_them(tmp_path: Path):
    assert _answer(_network_case(tmp_path / "delay", 400.0))[0] == "network-delay"
    assert _answer(_network_case(tmp_path / "bw", 60.0))[0] == "interconnect-degradation"


def _tx(node: str, bytes_after: float, packets_after: float) -> list[MetricDeviation]:
    return [MetricDeviation(node, f"{NODE}network_transmit_bytes:rate", 2e6, bytes_after, -10.0, "rate"),
            MetricDeviation(node, f"{NODE}network_transmit_packets:rate", 2000.0, packets_after, -10.0, "rate")]


def test_the_node_whose_outgoing_packets_grew_most_holds_the_queue():
    got = egress_queue_findings(_ctx(_tx("node-0", 2e5, 130.0) + _tx("node-1", 2e5, 100.0)))
    assert [(f.key, f.component) for f in got] == [("net_egress_queue", "node-1")]  # x2.0 vs x1.54
    assert egress_queue_findings(_ctx(_tx("node-0", 2e5, 102.0) + _tx("node-1", 2e5, 100.0))) == []  # within 5 %
    assert egress_queue_findings(_ctx(_tx("node-0", 1.8e6, 130.0) + _tx("node-1", 2e5, 100.0))) == []  # one fell


def test_the_queue_side_breaks_the_tie_of_a_link_between_two_nodes(tmp_path: Path):
    path = _network_case(tmp_path / "bw", 60.0)
    df = pd.read_csv(path / "data.csv")
    w = _window(df)
    df.loc[w, f"node-0_{NODE}network_transmit_packets:rate"] = 90.0  # node-1's packets grew more: its queue
    case = write_case(tmp_path / "bw1", None, frame=df,
                      events=[_ev(r, "allreduce", 120.0, 5.0) for r in RANKS])
    assert _answer(case) == ("interconnect-degradation", "node-1")
