"""Stalled collectives: who is stopped, who waits, and when nobody is (a slow link)."""

from __future__ import annotations

import re

from chaosbench.detectors.analyzer.findings import _stalls
from chaosbench.detectors.api import AnomalousEvent

RX = re.compile(r"all_?reduce|gloo", re.I)
RANKS = ["rank-0", "rank-1", "rank-2", "rank-3"]


def ev(rank: str, name: str, dur_ms: float, ts: float = 0.0, expected_ms: float = 5.0) -> AnomalousEvent:
    return AnomalousEvent(rank, rank, "t", name, ts, dur_ms * 1000, expected_ms * 1000, 10.0)


def by_key(findings):
    return {(f.key, f.component) for f in findings}


def test_the_silent_rank_is_the_stopped_one():
    events = [ev(r, "gloo:all_reduce", 24_000) for r in ("rank-0", "rank-2", "rank-3")]
    got = by_key(_stalls(events, RX, RANKS))
    assert ("rank_stall", "rank-1") in got
    assert {("collective_slow", r) for r in ("rank-0", "rank-2", "rank-3")} <= got
    assert not any(k == "rank_stall" and c != "rank-1" for k, c in got)


def test_a_straggler_with_slow_compute_is_not_called_stopped():
    events = [ev(r, "gloo:all_reduce", 1_100) for r in ("rank-0", "rank-1", "rank-2")]
    events.append(ev("rank-3", "attention", 90, expected_ms=15))
    assert not any(f.key == "rank_stall" and f.component == "rank-3" for f in _stalls(events, RX, RANKS))


def test_every_rank_stalled_op_after_op_is_a_slow_link_not_a_hang():
    events = [ev(r, "gloo:all_reduce", 1_500, ts=i * 2e6) for r in RANKS for i in range(4)]
    got = _stalls(events, RX, RANKS)
    assert got and all(f.key == "collective_slow" for f in got)
    one_long_op = [ev(r, "gloo:all_reduce", 24_000) for r in RANKS]  # a hang seen by every rank: ambiguous
    assert all(f.key == "rank_stall" and f.strength == 0.5 for f in _stalls(one_long_op, RX, RANKS))


def test_the_rank_stalled_above_the_transport_is_the_hung_one():
    """A live hang: rank-2 blocks in its all-reduce call before its part reaches gloo; its peers wait in
    gloo:all_reduce (and in their own all-reduce ranges around it)."""
    events = [ev(r, "allreduce", 24_000) for r in RANKS]
    events += [ev(r, "gloo:all_reduce", 24_000) for r in RANKS if r != "rank-2"]
    got = _stalls(events, RX, RANKS)
    assert {(f.key, f.component) for f in got if f.key == "rank_stall"} == {("rank_stall", "rank-2")}
    assert next(f for f in got if f.key == "rank_stall").strength == 1.0
    assert {f.component for f in got if f.key == "collective_slow"} == {"rank-0", "rank-1", "rank-3"}
    two = [e for e in events if not (e.component == "rank-3" and e.name.startswith("gloo"))]
    assert not any(f.key == "rank_stall" and f.strength == 1.0 for f in _stalls(two, RX, RANKS))  # ambiguous


def test_a_grown_busy_aggregate_is_slowness_not_a_stop():
    """Outpost's per-step compute-time aggregate of a starved rank (cpu-contention on a real case: 1.5 s of
    attention compute in a step that takes 35 ms) is compute slowness: the rank ran, it did not stop."""
    events = [ev("rank-1", "busy: attention [b67ab5]", 1_480, expected_ms=35.0)]
    assert not any(f.key == "rank_stall" for f in _stalls(events, RX, RANKS))


def test_one_rank_stalled_for_seconds_alone_is_the_hung_one():
    """Outpost reports waits as victims: for a live hang only the hung rank's stuck collective is left."""
    got = _stalls([ev("rank-1", "allreduce", 17_500)], RX, RANKS)
    assert [(f.key, f.component, f.strength) for f in got] == [("rank_stall", "rank-1", 1.0)]
    # a slow rank's collective overrunning by a second or two is no hang: it stays ambiguous
    short = _stalls([ev("rank-1", "allreduce", 1_600)], RX, RANKS)
    assert [(f.key, f.strength) for f in short] == [("rank_stall", 0.5)]


def test_one_waiting_rank_of_two_does_not_make_the_other_stopped():
    """Two ranks, rank-0 stalled 1.6 s in a collective (a contended rank's own wait), rank-1 silent: Outpost
    may have dropped rank-1's waits as victims, so rank-1 is not called stopped; neither are the silent ranks
    behind a second-long wait of three peers."""
    two = _stalls([ev("rank-0", "gloo:all_reduce", 1_600)], RX, ["rank-0", "rank-1"])
    assert not any(f.key == "rank_stall" and f.component == "rank-1" for f in two)
    short = _stalls([ev(r, "gloo:all_reduce", 1_600) for r in ("rank-0", "rank-2", "rank-3")], RX, RANKS)
    assert not any(f.key == "rank_stall" and f.component == "rank-1" for f in short)


def test_one_rank_stalled_outside_collectives_stays_a_stop():
    got = _stalls([ev("rank-1", "engine.step", 12_000)], RX, RANKS)
    assert [(f.key, f.component, f.strength) for f in got] == [("rank_stall", "rank-1", 1.0)]
