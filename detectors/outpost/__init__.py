"""KAT Outpost: trace-tree anomaly detection across parallel workers.

Pipeline (one module per stage): ``importers`` (Chrome/Kineto JSON -> columnar event table, each file's
threads nested into trees by ``nesting`` in its reader process) -> ``ttc`` (tree labels: paths, steps, self
time) -> ``waits`` (waits vs compute, thread classes, busy time per compute thread and step)
-> ``ttad`` (cross-worker and intra-worker scores) -> ``localize`` (deepest anomalous events, verdict, ranking:
compute threads that explain the waits first) -> ``node_first`` (with a topology: a node whose ranks are
all to blame comes first) -> ``blamed_events`` (the events reported are the blamed components', not their
victims' waits) -> ``with_nodes`` (the nodes of the ranked ranks follow them).

Public calls:
- ``outpost(path, worker_key="pid", lam=4.0, split=None) -> OutpostReport`` for any trace file or
  directory (``split``: unix seconds before which a worker's events are its healthy history).
- ``analyze`` + ``report``: the same in two halves, so a lambda sweep scores a case once.
- ``detect(case) -> Result``: the detector contract (chaosbench.detectors.api).

Faults visible in traces. Outpost reads only the per-rank traces, so it can name a fault's component only when
the fault's mechanism changes the duration or the progress of the work those traces record on the target's
ranks, and not alike on every rank. By mechanism (FAULTS.md), not by what Outpost gets right:

- visible: gpu-clock-lock and gpu-power-cap (every kernel of the rank slower; a power cap only when it is below
  the board's draw under the load, else no kernel changes), gpu-compute-contention (a co-located hog stretches
  the rank's kernels), nccl-hang (the rank stops in the collective), cpu-throttle (a CPU quota on the node's
  own processes stretches its ranks' work).
- not visible: network-delay and interconnect-degradation (a link is slower: the collectives of every rank on
  both ends of it wait alike, so the traces show that communication slowed, not which node's link),
  gpu-memory-pressure (the engine schedules smaller batches: every tensor-parallel rank runs the same batch,
  so no rank's work changes against another's), gpu-xid-error (the worker dies and restarts: the traces of
  the fault window are lost), and on the local testbed cpu-contention and host-memory-pressure (the emulated
  nodes share the machine's CPUs and memory, so the stress slows every rank; on a cluster, where a node's
  host is its own, they would be visible as a node whose ranks are all slower).
- one rank per node: a node's only rank and the node run the same traced work, so a slowed rank cannot be
  told from a slowed host by timing; Outpost names the rank and puts its node right after it
  (``with_nodes``): node-level AC@1 and component-level AC@2 credit it, component-level AC@1 does not.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from chaosbench.detectors.outpost.heap import reuse_freed_memory
from chaosbench.detectors.outpost.importers import EventTable, read_traces
from chaosbench.detectors.outpost.localize import COLLECTIVE, LocalizeConfig, localize
from chaosbench.detectors.outpost.ttad import Scores, TTADConfig, anomalous, score
from chaosbench.detectors.outpost.ttc import Forest, build
from chaosbench.detectors.outpost.waits import with_busy

__all__ = ["Analysis", "OutpostEvent", "OutpostRank", "OutpostReport", "analyze", "blamed_events", "detect",
           "node_first", "outpost", "report", "with_nodes"]

DEFAULT_LAMBDA = 4.0


@dataclass(frozen=True)
class OutpostEvent:
    worker: str  # raw value of the worker key
    worker_name: str
    component: str
    thread: str
    name: str
    path: str
    step: int
    ts: float  # us
    dur: float
    expected_dur: float
    score: float


@dataclass(frozen=True)
class OutpostRank:
    worker: str
    worker_name: str
    component: str
    thread: str
    score: float
    events: int
    units: int
    cause: bool = True  # its compute explains the waits (False: only waits, or too little to explain them)


@dataclass(frozen=True)
class OutpostReport:
    anomalous: bool
    ranking: tuple[OutpostRank, ...]
    events: tuple[OutpostEvent, ...]  # localized, best first (at most LocalizeConfig.max_events)
    n_events: int
    n_anomalous: int
    n_localized: int
    detected_at: float | None  # unix s of the first localized anomaly on a flagged worker
    lam: float
    runtime_s: float
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Analysis:
    forest: Forest
    scores: Scores
    cfg: TTADConfig
    timings: dict[str, float]
    split_us: float | None = None


def analyze(path: Path | list[Path], worker_key: str = "pid", split: float | None = None,
            cfg: TTADConfig | None = None) -> Analysis:
    """Read, build trees and score every event (the lambda-independent part)."""
    cfg = cfg or TTADConfig()
    t0 = time.perf_counter()
    table: EventTable = read_traces(path, worker_key)
    t1 = time.perf_counter()
    with reuse_freed_memory():  # not while parsing: its buffers are few and large
        forest = build(table)
        del table  # the forest holds it until with_busy replaces both
        t2 = time.perf_counter()
        forest = with_busy(forest)
        t3 = time.perf_counter()
        scores = score(forest, None if split is None else split * 1e6, cfg)
        t4 = time.perf_counter()
    return Analysis(forest, scores, cfg, {"read_s": t1 - t0, "ttc_s": t2 - t1, "waits_s": t3 - t2,
                                          "ttad_s": t4 - t3}, None if split is None else split * 1e6)


def _event(forest: Forest, scores: Scores, row: int) -> OutpostEvent:
    t = forest.table
    w = t.workers[t.worker[row]]
    return OutpostEvent(w.key, w.name, w.component, t.threads[t.thread[row]][2], t.names[t.name[row]],
                        forest.path_text(row), int(forest.step[row]), float(t.ts[row]), float(t.dur[row]),
                        float(scores.expected[row]), float(scores.score[row]))


def report(analysis: Analysis, lam: float = DEFAULT_LAMBDA, loc: LocalizeConfig | None = None) -> OutpostReport:
    """Threshold the scores at ``lam``, localize, rank and decide."""
    loc = loc or LocalizeConfig()
    t0 = time.perf_counter()
    f, s = analysis.forest, analysis.scores
    with reuse_freed_memory():
        anom = anomalous(f, s, lam, analysis.cfg)
        result = localize(f, s, anom, loc, analysis.split_us)
    t = f.table
    ranking = tuple(
        OutpostRank(t.workers[r.worker].key, t.workers[r.worker].name, t.workers[r.worker].component,
                    t.threads[r.thread][2], r.score, r.events, r.units, r.cause)
        for r in result.ranking
    )
    events = tuple(_event(f, s, int(row)) for row in result.localized[: loc.max_events])
    timings = {**analysis.timings, "localize_s": time.perf_counter() - t0}
    return OutpostReport(
        anomalous=result.anomalous, ranking=ranking, events=events, n_events=len(t),
        n_anomalous=result.n_anomalous, n_localized=int(result.localized.shape[0]),
        detected_at=None if result.first_ts_us is None else result.first_ts_us / 1e6, lam=lam,
        runtime_s=float(sum(timings.values())), timings=timings,
    )


def outpost(path: Path | list[Path], worker_key: str = "pid", lam: float = DEFAULT_LAMBDA,
            split: float | None = None, cfg: TTADConfig | None = None,
            loc: LocalizeConfig | None = None) -> OutpostReport:
    """Outpost on any trace file or directory of per-worker traces."""
    return report(analyze(path, worker_key, split, cfg), lam, loc)


def to_result(rep: OutpostReport, method: str = "outpost"):
    from chaosbench.detectors.api import AnomalousEvent, RankedComponent, Result

    ranking = tuple(RankedComponent(component=r.component, score=r.score, thread=r.thread) for r in rep.ranking)
    events = tuple(AnomalousEvent(component=e.component, worker=e.worker, thread=e.thread, name=e.name, ts=e.ts,
                                  dur=e.dur, expected_dur=e.expected_dur, score=e.score, path=e.path)
                   for e in rep.events)
    extra = {"n_events": rep.n_events, "n_anomalous": rep.n_anomalous, "n_localized": rep.n_localized,
             "lambda": rep.lam, "timings": rep.timings}
    return Result(method=method, ranking=ranking, anomalous=rep.anomalous, events=events,
                  detected_at=rep.detected_at, runtime_s=rep.runtime_s, extra=extra)


HANG_SHARE = 0.5  # a localized event whose excess covers this share of the post-injection window is a hang
# the transport of a collective: the backend's op on its own thread (gloo:all_reduce, nccl:all_reduce) or the
# NCCL kernel; a rank waiting there has handed its part over, a rank stuck above it has not
TRANSPORT = re.compile(r"^(gloo|nccl|rccl)[:_]|nccl(dev)?kernel", re.IGNORECASE)


def stopped_first(rep: OutpostReport, case) -> OutpostReport:
    """A hang stalls every rank in the same collective, so the longest events cannot tell which rank hangs;
    what the traces of a real hang do show is where each rank waits. Peers that handed their part to the
    transport wait in it (a ``gloo:all_reduce``/NCCL kernel spanning the hang: the flight recorder's
    "started" entry); the hung rank is stalled in the collective call above it, with no such wait (its entry
    never started), and a rank with no stalled event at all while every peer waits never joined. When the
    evidence is a hang and its peers wait in the transport, those ranks go first (their order otherwise kept).
    Traces only: no rule on telemetry gaps or CPU, which a live hang does not change. Any problem: unchanged."""
    if not rep.anomalous or not rep.events:
        return rep
    longest = max(rep.events, key=lambda e: e.dur - e.expected_dur)
    excess = longest.dur - longest.expected_dur
    last = max((e.ts + e.dur) / 1e6 for e in rep.events)
    if last <= case.inject_time or excess < HANG_SHARE * 1e6 * (last - case.inject_time):
        return rep
    stalled = [e for e in rep.events if e.dur - e.expected_dur >= HANG_SHARE * excess]
    waiting = {e.component for e in stalled if TRANSPORT.search(e.name)}
    if not waiting:
        return rep  # no transport ops in these traces: nothing tells the ranks apart
    in_call = {e.component for e in stalled if COLLECTIVE.search(e.name) and not TRANSPORT.search(e.name)}
    ranks = list(dict.fromkeys(r.component for r in rep.ranking))
    try:  # the hung rank may have no event in the report (it never entered the collective)
        ranks += [r for r in case.topology.ranks if r not in ranks]
    except Exception:  # noqa: BLE001 - no topology: the ranked ranks only
        pass
    hung = (in_call - waiting) & set(ranks)
    if not hung:
        silent = [r for r in ranks if r not in {e.component for e in stalled}]
        hung = set(silent) if len(silent) == 1 and len(waiting) == len(ranks) - 1 else set()
    if not hung or hung == set(ranks):
        return rep
    top = rep.ranking[0].score if rep.ranking else 0.0
    missing = tuple(OutpostRank("", r, r, "", top, 0, 0) for r in ranks if r in hung
                    and r not in {x.component for x in rep.ranking})
    ranking = missing + tuple(sorted(rep.ranking, key=lambda r: r.component not in hung))
    return replace(rep, ranking=ranking)


NODE_SHARE = 0.5  # a rank is blamed when its compute evidence is at least this share of the top rank's


def node_first(rep: OutpostReport, rank_node: dict[str, str]) -> OutpostReport:
    """Name what an operator would fix: when the ranks whose compute explains the case (``cause``
    entries with at least ``NODE_SHARE`` of the top rank's evidence) are exactly every rank of one node
    (two or more), that node goes first, its ranks right below it; otherwise (one rank, ranks of
    several nodes, waits only) the ranking is unchanged and a rank fault stays on its rank."""
    per: dict[str, float] = {}
    for r in rep.ranking:
        if r.cause:
            per[r.component] = per.get(r.component, 0.0) + r.score
    if not per:
        return rep
    top = max(per.values())
    blamed = {c for c, s in per.items() if s >= NODE_SHARE * top}
    nodes = {rank_node.get(c) for c in blamed}
    if len(nodes) != 1 or None in nodes:
        return rep
    node = nodes.pop()
    members = {r for r, n in rank_node.items() if n == node}
    if len(members) < 2 or blamed != members:
        return rep
    head = OutpostRank("", node, node, "", sum(per[c] for c in members), sum(r.events for r in rep.ranking
                       if r.component in members), max(r.units for r in rep.ranking if r.component in members))
    return replace(rep, ranking=(head, *sorted(rep.ranking, key=lambda r: r.component not in members)))


def with_nodes(rep: OutpostReport, rank_node: dict[str, str]) -> OutpostReport:
    """The nodes that host the ranked ranks, as the next places an operator looks: a node with one rank right
    after that rank (its traces cannot tell the rank's device from its host), the others after every rank,
    in the order of their first rank."""
    named = {r.component for r in rep.ranking}
    size: dict[str, int] = {}
    for n in rank_node.values():
        size[n] = size.get(n, 0) + 1
    low = min((r.score for r in rep.ranking), default=0.0)
    out: list[OutpostRank] = []
    later: list[str] = []
    for r in rep.ranking:
        out.append(r)
        node = rank_node.get(r.component)
        if node is None or node in named or node in later or any(x.component == node for x in out):
            continue
        if size[node] == 1:
            out.append(OutpostRank("", node, node, "", r.score, 0, 0, cause=False))
        else:
            later.append(node)
    tail = [OutpostRank("", n, n, "", low, 0, 0, cause=False) for n in later]
    return replace(rep, ranking=tuple(out + tail)) if len(out) + len(tail) > len(rep.ranking) else rep


def blamed_events(rep: OutpostReport, rank_node: dict[str, str], hung: bool = False) -> OutpostReport:
    """Waits are victims at the event level too: the events reported are those of the components the ranking
    blames (its first entry, and its cause entries with at least ``NODE_SHARE`` of the top one's evidence, as
    ``node_first`` counts them; a node stands for its ranks). The victims' waits stay in the
    count (``n_localized``); in a hang (``hung``: ``stopped_first`` named the rank) only its first entry is
    blamed. When no compute explains the waits (a slow link: waits are the evidence) or the
    blamed components have no event (a hung rank that never entered the collective), every event is kept."""
    if not rep.ranking or not rep.events:
        return rep
    per: dict[str, float] = {}
    for r in rep.ranking:
        if r.cause and r.events and not hung:  # hung: its first entry only
            per[r.component] = per.get(r.component, 0.0) + r.score
    if not per and not hung:
        return rep
    top = max(per.values(), default=0.0)
    blamed = {c for c, s in per.items() if s >= NODE_SHARE * top} | {rep.ranking[0].component}
    kept = tuple(e for e in rep.events if e.component in blamed or rank_node.get(e.component) in blamed)
    return replace(rep, events=kept) if kept else rep


def detect(case) -> "Result":  # noqa: F821 - chaosbench.detectors.api imported lazily
    """The detector contract: traces of the case, history = events before the injection time."""
    from chaosbench.errors import CaseInvalid

    files = case.trace_files()
    if not files:
        raise CaseInvalid(f"{case.path}: no traces (traces/*.json[.gz])")
    traces = outpost(files, "pid", DEFAULT_LAMBDA, split=case.inject_time)
    rep = stopped_first(traces, case)
    hung = rep.ranking != traces.ranking  # a hung rank was named: it stays first
    try:
        rank_node = dict(case.topology.rank_node)
    except Exception:  # noqa: BLE001 - an incomplete topology.json: its rank_node alone, else rank level
        try:
            rank_node = dict(json.loads((Path(case.path) / "topology.json").read_text()).get("rank_node", {}))
        except Exception:  # noqa: BLE001
            rank_node = {}
    if not hung:
        rep = node_first(rep, rank_node)
    return to_result(with_nodes(blamed_events(rep, rank_node, hung), rank_node))

