"""From an AnalysisContext to findings: named, localized, graded observations.

A finding is one thing the knowledge base can reason about: ``sm_clock`` on
``rank-2`` with strength 1.0 ("DCGM_FI_DEV_SM_CLOCK 1980 -> 500"). Metric findings
come from deviations matched to the KB's families (in the family's direction),
log findings from the KB's log patterns, trace findings from Outpost's events.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from chaosbench.detectors.analyzer.context import AnalysisContext, MetricDeviation
from chaosbench.detectors.analyzer.knowledge import KnowledgeBase, Scope
from chaosbench.detectors.api import AnomalousEvent

STALL_US = 1_000_000.0  # an op lasting a second or more, 20x its usual time: a hang or a stopped process
STALL_RATIO = 20.0
MANY_STALLS = 3  # stalled collectives per rank beyond which the stall is the link's, not one stopped rank's
HANG_US = 5_000_000.0  # a collective stuck this long on one rank alone is a hang, not a slow step
_RANK_IN_TEXT = re.compile(r"\brank[-_ ]?(\d+)\b", re.I)
# the transport of a collective (the backend's op on its own thread, or the NCCL kernel): a rank waiting there
# has handed its part over; a rank stalled in the collective call above it has not
TRANSPORT = re.compile(r"^(gloo|nccl|rccl)[:_]|nccl(dev)?kernel", re.I)


# bytes per packet on a node whose traffic fell by half or more: a shaped (bandwidth-capped) link queues
# full-size segments and sends them back to back, so the average packet grows; an added delay leaves the
# traffic round-trip bound with as many small packets (acks, short messages) as before
SEGMENT_GROW = 1.2
SEGMENT_FLAT = 1.05
TRAFFIC_FALL = 0.5
EGRESS_MARGIN = 1.05
_NET_SERIES = re.compile(r"(transmit|receive|tx|rx)[:_](bytes|packets)", re.I)

BUSY_PREFIX = "busy: "  # Outpost's per-step compute-time aggregates (chaosbench.detectors.outpost.waits)
WEAK = 0.1  # a weak finding (|z| below z_min) weighs this much: it only breaks ties between components


@dataclass(frozen=True)
class Finding:
    key: str
    component: str
    strength: float  # (0, 1]
    detail: str
    weak: bool = False  # never satisfies a signature's requirement, never cited in a chain


def _grade_z(z: float) -> float:
    return min(1.0, abs(z) / 10.0)


def _grade_event(ev: AnomalousEvent) -> float:
    """By how many times and by how much time the op overran: 3x and 10 ms or more are full strength; a
    microsecond op that took 60 us (scheduling jitter on a busy box) stays weak however large its ratio."""
    by_ratio = (_ratio(ev) - 1.0) / 2.0
    excess_us = max(ev.dur - ev.expected_dur, 1.0)
    by_time = np.log10(excess_us) / 4.0  # 10 us -> 0.25, 1 ms -> 0.75, 10 ms -> 1
    return float(np.clip(min(by_ratio, by_time), 0.1, 1.0))


def family_of(metric: str, kb: KnowledgeBase, rising: bool | None = None) -> str | None:
    """The first family whose pattern matches; given the direction the series moved (``rising``), the first
    one that matches in that direction (GPU power falling is a cap, rising is extra work on the GPU)."""
    for name, fam in kb.families.items():
        if not fam.regex().search(metric):
            continue
        if rising is None or fam.bit is not None or rising == (fam.direction == "up"):
            return name
    return None


def _new_bit(before: float, after: float, bit: int) -> bool:
    if not (np.isfinite(before) and np.isfinite(after)):
        return False
    return bool(int(round(after)) & bit) and not bool(int(round(before)) & bit)


def _explained(dev: MetricDeviation, pattern: str, ctx: AnalysisContext) -> bool:
    """A node's increase that its ranks' matching series account for (at least half of it)."""
    ranks = {r for r, n in ctx.topology.rank_node.items() if n == dev.component}
    if not ranks:
        return False
    rx = re.compile(pattern, re.I)
    theirs = sum(d.after - d.before for d in (*ctx.deviations, *ctx.weak_deviations)
                 if d.component in ranks and rx.search(d.metric))
    return theirs >= 0.5 * (dev.after - dev.before)


def metric_findings(ctx: AnalysisContext, kb: KnowledgeBase, hard_only: bool) -> list[Finding]:
    out = []
    for dev in (*ctx.deviations, *ctx.weak_deviations):
        weak = abs(dev.z) < ctx.windows.z_min
        name = family_of(dev.metric, kb, dev.z > 0)
        if name is None:
            continue
        fam = kb.families[name]
        change = abs(dev.after - dev.before)
        # a soft signal that moved by a large share of its level (a node's memory doubling) is no load wobble
        hard = fam.hard or (fam.hard_rel is not None and change >= fam.hard_rel * abs(dev.before))
        if hard_only and not hard:
            continue
        if fam.explained_by and dev.component in ctx.topology.nodes and _explained(dev, fam.explained_by, ctx):
            continue
        if (fam.min_change is not None and change < fam.min_change) or \
                (fam.min_rel is not None and change < fam.min_rel * abs(dev.before)):
            continue
        if fam.bit is not None and not _new_bit(dev.before, dev.after, fam.bit):
            continue
        if fam.bit is None and (dev.z > 0) != (fam.direction == "up"):
            continue
        strength = _grade_z(dev.z) * (WEAK if weak else 1.0)
        out.append(Finding(fam.finding_key(name), dev.component, strength, dev.describe(), weak))
    return out


def _traffic(ctx: AnalysisContext, node: str) -> dict[tuple[str, str], MetricDeviation]:
    """The node's changed traffic series by (direction, unit): ("transmit", "bytes") and so on."""
    out: dict[tuple[str, str], MetricDeviation] = {}
    for d in (*ctx.deviations, *ctx.weak_deviations):
        m = _NET_SERIES.search(d.metric) if d.component == node else None
        if m and np.isfinite(d.before) and np.isfinite(d.after):
            direction = "transmit" if m.group(1).lower() in ("transmit", "tx") else "receive"
            out[(direction, m.group(2).lower())] = d
    return out


def segment_findings(ctx: AnalysisContext) -> list[Finding]:
    """net_bulk_segments / net_small_segments per node, from its byte and packet rates (both directions)."""
    out = []
    for node in ctx.topology.nodes:
        series = _traffic(ctx, node)
        pairs = [(series[(d, "bytes")], series[(d, "packets")]) for d in ("transmit", "receive")
                 if (d, "bytes") in series and (d, "packets") in series]  # a direction counts with both
        if not pairs:
            continue
        b0, b1 = sum(b.before for b, _ in pairs), sum(b.after for b, _ in pairs)
        p0, p1 = sum(p.before for _, p in pairs), sum(p.after for _, p in pairs)
        bytes_z = [b.z for b, _ in pairs]
        if min(b0, p0, p1) <= 0 or b1 > TRAFFIC_FALL * b0:
            continue
        growth = (b1 / p1) / (b0 / p0)
        if SEGMENT_FLAT < growth < SEGMENT_GROW:
            continue
        z = min(bytes_z)
        weak = abs(z) < ctx.windows.z_min
        key = "net_bulk_segments" if growth >= SEGMENT_GROW else "net_small_segments"
        detail = (f"{node} traffic {_fmt_rate(b0)} -> {_fmt_rate(b1)} B/s, bytes per packet "
                  f"{b0 / p0:.0f} -> {b1 / p1:.0f} (x{growth:.2f})")
        out.append(Finding(key, node, _grade_z(z) * (WEAK if weak else 1.0), detail, weak))
    return out


def egress_queue_findings(ctx: AnalysisContext) -> list[Finding]:
    """net_egress_queue: of the nodes whose traffic collapsed, the one whose outgoing packets grew the most
    (by 5 % more than any other's): a link fault queues the node's egress (a shaper's backlog, held packets),
    which then leaves in larger packets while its peer keeps sending small ones. Breaks the tie of a link
    that joins the only two nodes, where every other counter moves alike on both sides."""
    growth: dict[str, float] = {}
    for node in ctx.topology.nodes:
        series = _traffic(ctx, node)
        by, pk = series.get(("transmit", "bytes")), series.get(("transmit", "packets"))
        if by is None or pk is None or min(by.before, pk.before, pk.after) <= 0:
            continue
        if by.after > TRAFFIC_FALL * by.before:
            continue
        growth[node] = (by.after / pk.after) / (by.before / pk.before)
    if len(growth) < 2:
        return []
    ranked = sorted(growth.items(), key=lambda kv: -kv[1])
    (top, g), (_, second) = ranked[0], ranked[1]
    if g < EGRESS_MARGIN * second:
        return []
    return [Finding("net_egress_queue", top, 1.0, f"{top}'s outgoing bytes per packet x{g:.2f}, "
                                                  f"the other nodes' at most x{second:.2f}")]


def _fmt_rate(x: float) -> str:
    return f"{x:.3g}"


def log_findings(ctx: AnalysisContext, kb: KnowledgeBase) -> list[Finding]:
    out = []
    patterns = {k: re.compile(p, re.I) for k, p in kb.logs.items()}
    for line in ctx.logs:
        for key, rx in patterns.items():
            if not rx.search(line.message):
                continue
            m = _RANK_IN_TEXT.search(line.message)
            comp = f"rank-{m.group(1)}" if m and f"rank-{m.group(1)}" in ctx.components else line.component
            out.append(Finding(key, comp or "-", 1.0, f"log {line.component}: {line.message[:120]}"))
    return out


def _is_collective(ev: AnomalousEvent, rx: re.Pattern[str]) -> bool:
    return bool(rx.search(ev.name))


def _event_detail(ev: AnomalousEvent) -> str:
    return f"{ev.name} on {ev.component} {ev.dur / 1000:.3g} ms vs {ev.expected_dur / 1000:.3g} ms expected"


def _ratio(ev: AnomalousEvent) -> float:
    return ev.dur / ev.expected_dur if ev.expected_dur > 0 else 10.0


def _per_rank(events: list[AnomalousEvent], key: str, rx: re.Pattern[str], want_coll: bool) -> list[Finding]:
    best: dict[str, Finding] = {}
    for ev in events:
        if _is_collective(ev, rx) != want_coll:
            continue
        f = Finding(key, ev.component, _grade_event(ev), _event_detail(ev))
        if ev.component not in best or f.strength > best[ev.component].strength:
            best[ev.component] = f
    return list(best.values())


def _stalls(events: list[AnomalousEvent], rx: re.Pattern[str], ranks: list[str]) -> list[Finding]:
    best: dict[str, Finding] = {}
    n_stalled: dict[str, int] = {}
    for ev in events:
        if ev.dur < STALL_US or _ratio(ev) < STALL_RATIO or ev.name.startswith(BUSY_PREFIX):
            continue  # a step's summed compute time (Outpost's busy aggregate) that grew is slowness, not a stop
        n_stalled[ev.component] = n_stalled.get(ev.component, 0) + 1
        strength = 0.5 if _is_collective(ev, rx) else 1.0  # a stall inside a collective may be a waiting peer
        f = Finding("rank_stall", ev.component, strength, f"{_event_detail(ev)} (stalled)")
        if ev.component not in best or f.strength > best[ev.component].strength:
            best[ev.component] = f
    hung = _hung_above_transport([ev for ev in events if ev.dur >= STALL_US and _ratio(ev) >= STALL_RATIO],
                                 rx, ranks)
    if hung:
        return hung
    if len(best) == 1:
        # one rank stalled for seconds in a collective and no other rank reported: Outpost already counted
        # the peers' waits as victims of it (a slow rank's steps overrun by a second or two, not by this)
        (rank, f), = best.items()
        longest = max((ev.dur for ev in events if ev.component == rank and _is_collective(ev, rx)), default=0.0)
        if f.strength < 1.0 and longest >= HANG_US:
            return [Finding("rank_stall", rank, 1.0, f"{f.detail}: the only rank stalled, for "
                                                     f"{longest / 1e6:.3g} s, in a collective")]
    if sum(f.strength == 1.0 for f in best.values()) > 1:  # one stopped rank stalls the others: several
        # ranks stalled outside a collective are waiting (inside an enclosing range), not stopped
        return [Finding("collective_slow", f.component, 1.0, f"{f.detail}: waiting") for f in best.values()]
    in_collectives = bool(best) and all(f.strength < 1.0 for f in best.values())
    silent = [r for r in ranks if not any(ev.component == r for ev in events)]
    longest = max((ev.dur for ev in events if ev.component in best), default=0.0)
    if in_collectives and len(best) == len(ranks) - 1 >= 2 and len(silent) == 1 and longest >= HANG_US:
        # every peer (two or more agree) is stuck for seconds in a collective and one rank shows nothing at
        # all: it never joined (stopped); a rank with slow compute of its own is a straggler instead (see
        # _straggler). One stalled rank of two says nothing: Outpost may have dropped the other's waits
        absent = silent[0]
        waiting = [Finding("collective_slow", f.component, 1.0, f"{f.detail}: waiting") for f in best.values()]
        return [*waiting, Finding("rank_stall", absent, 1.0, f"{', '.join(sorted(best))} stalled in a collective "
                                                             f"that {absent} never joined")]
    if in_collectives and len(best) == len(ranks) and min(n_stalled.values()) >= MANY_STALLS:
        # every rank, op after op: a slow link or transport (a hang is one long op), not a stopped rank
        return [Finding("collective_slow", f.component, 1.0, f"{f.detail}: {n_stalled[f.component]} such ops")
                for f in best.values()]
    return list(best.values())


def _hung_above_transport(stalled: list[AnomalousEvent], rx: re.Pattern[str], ranks: list[str]) -> list[Finding]:
    """A live hang: every peer waits in the collective's transport while one rank is stalled in the collective
    call with no transport wait: its part never reached the wire (the flight recorder's not-started entry)."""
    in_transport = {ev.component for ev in stalled if TRANSPORT.search(ev.name)}
    in_call = {ev.component: ev for ev in stalled if _is_collective(ev, rx) and not TRANSPORT.search(ev.name)}
    hung = [r for r in in_call if r not in in_transport]
    if len(hung) != 1 or in_transport != set(ranks) - set(hung):
        return []
    target, ev = hung[0], in_call[hung[0]]
    waiting = [Finding("collective_slow", r, 1.0, f"{r} waits in the transport of the collective") for r in
               sorted(in_transport)]
    return [*waiting, Finding("rank_stall", target, 1.0, f"{_event_detail(ev)}: stalled in the collective call "
                                                         f"without handing its part to the transport, while "
                                                         f"{', '.join(sorted(in_transport))} wait in it")]


def _straggler(ctx: AnalysisContext, coll: list[Finding], comp: list[Finding]) -> list[Finding]:
    """The rank everyone else waits for: its peers' anomalies are collectives, its own are not."""
    coll_s = {f.component: f.strength for f in coll}
    comp_s = {f.component: f.strength for f in comp}
    ranks = list(ctx.topology.ranks)
    waiting = [r for r in ranks if coll_s.get(r, 0.0) > 0 and coll_s.get(r, 0.0) >= comp_s.get(r, 0.0)]
    if not waiting or len(waiting) < (len(ranks) - 1) / 2:
        return []
    candidates = [r for r in ranks if r not in waiting]
    busy = [r for r in candidates if comp_s.get(r, 0.0) > 0]
    candidates = busy or candidates
    if not candidates:
        return []
    detail = f"{', '.join(waiting)} wait in collectives; {', '.join(candidates)} not"
    return [Finding("collective_straggler", r, 1.0 / len(candidates), detail) for r in candidates]


def _isolation(ctx: AnalysisContext, comp: list[Finding]) -> list[Finding]:
    """compute_isolated (one rank slow, not its node siblings) and compute_node (every rank of a node slow)."""
    s = {f.component: f for f in comp}
    out = []
    by_node: dict[str, list[str]] = defaultdict(list)
    for rank in ctx.topology.ranks:
        by_node[ctx.topology.rank_node.get(rank, "")].append(rank)
    for rank, f in s.items():
        siblings = [r for r in by_node.get(ctx.topology.rank_node.get(rank, ""), []) if r != rank]
        others = siblings or [r for r in ctx.topology.ranks if r != rank]
        if all(s[r].strength < 0.5 * f.strength for r in others if r in s):
            weight = 1.0 if siblings else 0.5  # a one-rank node cannot tell a rank from its node
            out.append(Finding("compute_isolated", rank, f.strength * weight, f.detail))
    for node, ranks in by_node.items():
        if node and ranks and all(r in s for r in ranks):
            strength = min(s[r].strength for r in ranks)
            out.append(Finding("compute_node", node, strength, f"slow ops on every rank of {node}: {', '.join(ranks)}"))
    return out


def _shape(events: list[AnomalousEvent], rx: re.Pattern[str]) -> list[Finding]:
    """Bandwidth loss stretches collectives by a factor; added delay adds a constant."""
    coll = [e for e in events if _is_collective(e, rx) and e.expected_dur > 0 and e.dur > e.expected_dur]
    if len(coll) < 3:
        return []
    exp = np.array([e.expected_dur for e in coll])
    if exp.max() < 2 * exp.min():
        return []
    excess = np.array([e.dur - e.expected_dur for e in coll])
    ratio = np.array([e.dur / e.expected_dur for e in coll])
    cv_excess = float(excess.std() / excess.mean())
    cv_ratio = float(ratio.std() / ratio.mean())
    if cv_excess < 0.5 * cv_ratio:
        key, why = "collective_latency", f"collectives gain a constant delay (~{np.median(excess) / 1000:.3g} ms)"
    elif cv_ratio < 0.5 * cv_excess:
        key, why = "collective_bandwidth", f"collectives stretch by a constant factor (~{np.median(ratio):.3g}x)"
    else:
        return []
    return [Finding(key, c, 1.0, why) for c in sorted({e.component for e in coll})]


def _strongest(findings: list[Finding]) -> list[Finding]:
    best: dict[str, Finding] = {}
    for f in findings:
        if f.component not in best or f.strength > best[f.component].strength:
            best[f.component] = f
    return list(best.values())


def trace_findings(ctx: AnalysisContext, kb: KnowledgeBase, metric_coll: list[Finding] = ()) -> list[Finding]:
    """Findings from Outpost's events; ``metric_coll``: collective_slow seen in per-rank metrics."""
    rx = re.compile(kb.collectives, re.I)
    events = list(ctx.events)
    coll = _per_rank(events, "collective_slow", rx, True)
    comp = _per_rank(events, "compute_slow", rx, False)
    waiting = _strongest(coll + [f for f in metric_coll if f.component in ctx.topology.ranks])
    stalls = _stalls(events, rx, list(ctx.topology.ranks))
    waiting = _strongest(waiting + [f for f in stalls if f.key == "collective_slow"])
    out = coll + comp + stalls + _straggler(ctx, waiting, comp) + _isolation(ctx, comp)
    out += _shape(events, rx)
    rank_gaps = [g for g in ctx.gaps if g.component in ctx.topology.ranks]
    if len(rank_gaps) == len(ctx.topology.ranks) > 1:
        rank_gaps = []  # every rank at once: a scrape outage or an idle stretch, not one rank's hang
    for gap in rank_gaps:
        detail = (f"{gap.share:.0%} of {gap.component} series stopped (missing or stuck): "
                  f"{gap.before_fill:.0%} -> {gap.after_fill:.0%} of samples live")
        out.append(Finding("rank_gap", gap.component, gap.share * (1.0 - gap.after_fill / gap.before_fill), detail))
    return out


def all_findings(ctx: AnalysisContext, kb: KnowledgeBase) -> list[Finding]:
    """Every finding; soft metric signals are dropped when Outpost looked and saw nothing."""
    quiet = ctx.outpost != "unavailable" and not ctx.events and ctx.outpost_anomalous is not True
    metric = metric_findings(ctx, kb, hard_only=quiet)
    coll = [f for f in metric if f.key == "collective_slow" and not f.weak]
    segments = [] if quiet else segment_findings(ctx) + egress_queue_findings(ctx)
    found = metric + segments + log_findings(ctx, kb) + trace_findings(ctx, kb, coll)
    return [f for f in found if f.strength > 0]


class FindingIndex:
    """Look findings up by key and scope relative to a candidate component."""

    def __init__(self, findings: list[Finding], ctx: AnalysisContext):
        self._by_key: dict[str, list[Finding]] = defaultdict(list)
        for f in findings:
            self._by_key[f.key].append(f)
        self._topo = ctx.topology

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def keys(self) -> set[str]:
        return set(self._by_key)

    def ranks_of(self, node: str) -> list[str]:
        return [r for r in self._topo.ranks if self._topo.rank_node.get(r) == node]

    def _where(self, candidate: str, scope: Scope) -> tuple[set[str] | None, set[str]]:
        """(full-strength components or None for anywhere, half-strength components)."""
        topo = self._topo
        if scope == "any":
            return None, set()
        if candidate in topo.nodes:
            return {candidate, *self.ranks_of(candidate)}, set()
        node = topo.rank_node.get(candidate, "")
        if scope == "node":
            return {node}, set()
        if scope == "peers":
            return set(topo.ranks) - {candidate}, set()
        return {candidate}, {node}  # self on a rank: its node's signals count half

    def best(self, key: str, candidate: str, scope: Scope = "self", strong: bool = False) -> Finding | None:
        """The strongest finding ``key`` within ``scope`` of ``candidate`` (``strong``: weak ones excluded)."""
        full, half = self._where(candidate, scope)
        best: Finding | None = None
        best_s = 0.0
        for f in self._by_key.get(key, ()):
            if strong and f.weak:
                continue
            s = f.strength if full is None or f.component in full else 0.5 * f.strength if f.component in half else 0.0
            if s > best_s:
                best, best_s = Finding(f.key, f.component, s, f.detail, f.weak), s
        return best
