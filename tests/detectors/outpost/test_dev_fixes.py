"""Behaviours found on the campaign's dev split (issue 14): a worker alone in its thread class still has
cross-worker peers, the events reported are the blamed components', and the nodes of the ranked ranks follow."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import orjson

from chaosbench.detectors.outpost import (
    OutpostEvent,
    OutpostRank,
    OutpostReport,
    analyze,
    blamed_events,
    outpost,
    with_nodes,
)
from chaosbench.detectors.outpost.synth import Slowdown, SynthSpec, generate, step_windows, truth_for


def _with_sampler(tmp_path: Path, spec: SynthSpec) -> tuple[Path, dict]:
    """Synthetic TP ranks where rank 0 alone also samples (as the mini engine's driver rank): its own
    thread class, so no same-class peer."""
    out = tmp_path / "traces"
    out.mkdir()
    for r, ev in generate(spec).items():
        if r == 0:
            main = [e for e in ev if e.get("ph") == "X" and e["name"] == "engine.step"]
            ev = ev + [{**main[0], "name": "sampler", "ts": e["ts"] + e["dur"] + 1.0, "dur": 3.0} for e in main]
        data = orjson.dumps({"traceEvents": ev})
        (out / f"rank-{r}.json.gz").write_bytes(gzip.compress(data))
    return out, truth_for(spec, step_windows(spec))


def test_a_worker_alone_in_its_class_is_compared_with_every_worker(tmp_path: Path) -> None:
    spec = SynthSpec(ranks=4, steps=40, seed=5, slowdowns=(Slowdown((0,), 1.6, 20, 39, "all"),))
    traces, truth = _with_sampler(tmp_path, spec)
    a = analyze(traces, split=truth["inject_time"])
    t = a.forest.table
    comp = np.array([t.workers[w].component for w in t.worker])
    rank0 = comp == "rank-0"
    cls = a.forest.thread_class[t.thread]
    assert not set(cls[rank0]) & set(cls[~rank0])  # alone in its class
    assert np.isfinite(a.scores.z_cross[rank0 & ~a.forest.aggregate]).mean() > 0.9  # it has peers
    rep = outpost(traces, split=truth["inject_time"])
    assert rep.anomalous and rep.ranking[0].component == "rank-0"


def _rep(ranking: list[tuple[str, bool, int]], events: list[str], scores: list[float] | None = None) -> OutpostReport:
    scores = scores or [10.0 - i for i in range(len(ranking))]
    ranks = tuple(OutpostRank("", c, c, "main", s, n, 5, cause) for s, (c, cause, n) in zip(scores, ranking))
    evs = tuple(OutpostEvent("", c, c, "main", "mlp", "mlp", 1, 1.0, 2.0, 1.0, 5.0) for c in events)
    return OutpostReport(True, ranks, evs, 10, len(evs), len(evs), 1.0, 4.0, 0.1)


def test_events_of_the_blamed_ranks_only() -> None:
    rn = {"rank-0": "node-0", "rank-1": "node-0", "rank-2": "node-1"}
    rep = _rep([("rank-1", True, 3), ("rank-0", False, 4)], ["rank-1", "rank-0", "rank-0", "rank-2"])
    assert [e.component for e in blamed_events(rep, rn).events] == ["rank-1"]  # rank-0's waits are victims
    weak = _rep([("rank-1", True, 3), ("rank-2", True, 2)], ["rank-1", "rank-2"], [10.0, 2.0])
    assert [e.component for e in blamed_events(weak, rn).events] == ["rank-1"]  # under NODE_SHARE of the top
    waits_only = _rep([("rank-0", False, 4), ("rank-2", False, 2)], ["rank-0", "rank-2"])
    assert blamed_events(waits_only, rn) == waits_only  # a slow link: the waits are the evidence
    hang = _rep([("rank-2", False, 0), ("rank-0", False, 4)], ["rank-0"])
    assert blamed_events(hang, rn, hung=True) == hang  # the hung rank has no event: keep them all
    node = _rep([("node-0", True, 5), ("rank-0", True, 3), ("rank-1", True, 2)], ["rank-0", "rank-2", "rank-1"])
    assert [e.component for e in blamed_events(node, rn).events] == ["rank-0", "rank-1"]


def test_nodes_follow_their_ranks() -> None:
    rn = {"rank-0": "node-0", "rank-1": "node-1"}
    rep = with_nodes(_rep([("rank-1", True, 3), ("rank-0", False, 4)], []), rn)
    assert [r.component for r in rep.ranking] == ["rank-1", "node-1", "rank-0", "node-0"]  # one rank per node
    assert not rep.ranking[1].cause and rep.ranking[1].score <= rep.ranking[0].score
    two = {"rank-0": "node-0", "rank-1": "node-0", "rank-2": "node-1"}
    rep2 = with_nodes(_rep([("rank-1", True, 3), ("rank-2", False, 4)], []), two)
    assert [r.component for r in rep2.ranking] == ["rank-1", "rank-2", "node-1", "node-0"]  # node-1: one rank
    named = _rep([("node-0", True, 5), ("rank-0", True, 3), ("rank-1", True, 2)], [])
    assert [r.component for r in with_nodes(named, {**rn, "rank-1": "node-0"}).ranking] == ["node-0", "rank-0",
                                                                                             "rank-1"]
    assert json.dumps(with_nodes(rep, {}).to_json())  # no topology: unchanged, serialisable
