"""The offline, deterministic backend: score every (fault, component) hypothesis of the
knowledge base against the case's findings and write the winner's causal chain.

Reasons from signals only (CaseView, Outpost's answer); never reads ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from chaosbench.detectors.analyzer.context import AnalysisContext
from chaosbench.detectors.analyzer.findings import Finding, FindingIndex, all_findings
from chaosbench.detectors.analyzer.knowledge import (
    TRACE_FINDINGS,
    KnowledgeBase,
    Scope,
    Signature,
    StepTemplate,
    default_kb,
)
from chaosbench.detectors.analyzer.output import Analysis, ChainStep, category_of, no_anomaly


@dataclass(frozen=True)
class Hypothesis:
    fault_id: str
    component: str
    score: float
    coverage: float  # share of the signature's evidence weight that was observed
    matched: tuple[Finding, ...]


def _scopes_of(sig: Signature, key: str) -> list[Scope]:
    """Where a required finding may be: the scopes its evidence entries give it (self if none)."""
    return [ev.scope for ev in sig.evidence if ev.finding == key] or ["self"]


def _score(fid: str, sig: Signature, cand: str, index: FindingIndex) -> Hypothesis | None:
    if not any(index.best(req, cand, scope, strong=True) for req in sig.requires for scope in _scopes_of(sig, req)):
        return None
    matched: list[Finding] = []
    score = covered = 0.0
    for ev in sig.evidence:
        f = index.best(ev.finding, cand, ev.scope)
        if f:
            score += ev.weight * f.strength
            covered += ev.weight
            matched.append(f)
    for ev in sig.against:
        f = index.best(ev.finding, cand, ev.scope)
        if f:
            score -= ev.weight * f.strength
    total = sum(ev.weight for ev in sig.evidence)
    return Hypothesis(fid, cand, score, covered / total if total else 0.0, tuple(matched))


def rank_hypotheses(ctx: AnalysisContext, index: FindingIndex, kb: KnowledgeBase) -> list[Hypothesis]:
    """Every hypothesis with a positive score, best first (ties: KB order, then Outpost's ranking)."""
    outpost_pos = {rc.component: i for i, rc in reversed(list(enumerate(ctx.outpost_ranking)))}
    for node in ctx.topology.nodes:  # a node ranks where its best rank does
        ranks = [outpost_pos[r] for r in index.ranks_of(node) if r in outpost_pos]
        if ranks and node not in outpost_pos:
            outpost_pos[node] = min(ranks)
    order = {fid: i for i, fid in enumerate(kb.signatures)}
    hyps = []
    for fid, sig in kb.signatures.items():
        for cand in ctx.topology.ranks if sig.target == "rank" else ctx.topology.nodes:
            h = _score(fid, sig, cand, index)
            if h and h.score > 0:
                hyps.append(h)
    hyps.sort(key=lambda h: (-round(h.score, 6), order[h.fault_id], outpost_pos.get(h.component, 1 << 20),
                             h.component))
    return hyps


GROUP_SHARE = 0.6  # a rank counts as implicated with the best one when its score reaches this share of the best's


def _group_of(best: Hypothesis, hyps: list[Hypothesis], ctx: AnalysisContext) -> tuple[str, list[str]] | None:
    """The pipeline stage or replica whose ranks, and no others, the best rank hypothesis implicates about as much
    as its top rank: a fault on every GPU of a stage or a replica is that group's, not one of its ranks'."""
    layout = ctx.topology.layout
    place = layout["ranks"].get(best.component) if layout else None
    if place is None:
        return None
    near = {h.component for h in hyps if h.fault_id == best.fault_id and h.score >= GROUP_SHARE * best.score}
    groups = []  # the smallest group first
    if layout["pipeline_parallel"] > 1:
        groups.append((f"replica-{place['replica']}.stage-{place['stage']}",
                       lambda p: (p["replica"], p["stage"]) == (place["replica"], place["stage"])))
    if layout["data_parallel"] > 1:
        groups.append((f"replica-{place['replica']}", lambda p: p["replica"] == place["replica"]))
    for name, member in groups:
        ranks = [r for r, p in layout["ranks"].items() if member(p)]
        if len(ranks) > 1 and near == set(ranks) and name in ctx.components:
            return name, ranks
    return None


def _on_group(analysis: Analysis, group: str, ranks: list[str]) -> Analysis:
    """The analysis with ``group`` as its root cause, named first in the cause step."""
    chain = tuple(replace(s, components=(group, *s.components), text=f"{s.text}; on every rank of {group}: "
                          f"{', '.join(ranks)}") if s.kind == "cause" else s for s in analysis.chain)
    return replace(analysis, chain=chain, root_cause=group)


def _confidence(best: Hypothesis, hyps: list[Hypothesis]) -> float:
    rival = next((h.score for h in hyps[1:] if h.fault_id != best.fault_id or h.component != best.component), 0.0)
    margin = max(0.0, (best.score - rival) / best.score) if best.score > 0 else 0.0
    return round(min(0.99, max(0.05, 0.25 + 0.45 * best.coverage + 0.3 * margin)), 2)


class _ChainWriter:
    def __init__(self, ctx: AnalysisContext, index: FindingIndex, best: Hypothesis, target_kind: str):
        self.ctx, self.index, self.best = ctx, index, best
        self.target = best.component
        self.node = best.component if target_kind == "node" else ctx.topology.rank_node.get(best.component, "")
        self.node_ranks = tuple(index.ranks_of(self.node)) or ((self.node,) if self.node else ())
        others = [r for r in ctx.topology.ranks if r != self.target]
        waiting = [r for r in others if index.best("collective_slow", r, strong=True)]
        self.peers = tuple(waiting or others)

    def _symptom_components(self) -> tuple[str, ...]:
        f = self.index.best("latency", self.target, "any", strong=True)
        if f and f.component in self.ctx.components:
            return (f.component,)
        return ("ingress",) if "ingress" in self.ctx.components else ()

    def _components(self, step: StepTemplate) -> tuple[str, ...]:
        if step.at == "symptom":
            f = self.index.best(step.finding, self.target, "any", strong=True) if step.finding else None
            return (f.component,) if f and f.component in self.ctx.components else self._symptom_components()
        return {"target": (self.target,), "peers": self.peers, "node_ranks": self.node_ranks}[step.at]

    def _evidence(self, step: StepTemplate) -> str:
        if not step.finding:
            return ""
        scopes: dict[str, Scope] = {"symptom": "any", "peers": "peers", "target": "self", "node_ranks": "self"}
        scope = scopes[step.at]
        cand = self.node if step.at == "node_ranks" and self.node else self.target
        f = self.index.best(step.finding, cand, scope, strong=True)
        strong_matched = [m for m in self.best.matched if not m.weak]
        if f is None and step.kind == "cause" and strong_matched:  # cite a signal, traces only if nothing else
            f = max(strong_matched, key=lambda m: (m.key not in TRACE_FINDINGS, m.strength))
        return f" (observed: {f.detail})" if f else " (expected, not observed)"

    def step(self, step: StepTemplate) -> ChainStep:
        text = step.text.format(target=self.target, node=self.node, peers=", ".join(self.peers),
                                node_ranks=", ".join(self.node_ranks))
        text += self._evidence(step)
        if step.kind == "symptom" and self.ctx.outpost == "unavailable":
            text += f"; {self.ctx.outpost_note or 'Outpost unavailable'}: metrics and logs only"
        return ChainStep(step.kind, self._components(step), text)


def _unknown(ctx: AnalysisContext, findings: list[Finding]) -> Analysis:
    top = max(findings, key=lambda f: f.strength)
    root = ctx.outpost_ranking[0].component if ctx.outpost_ranking else top.component
    if root not in ctx.components:
        root = next((f.component for f in findings if f.component in ctx.components), "ingress")
    details = "; ".join(f.detail for f in sorted(findings, key=lambda f: -f.strength)[:3])
    text = "the service deviates from its behaviour before the injection time"
    if ctx.outpost == "unavailable":
        text += f"; {ctx.outpost_note or 'Outpost unavailable'}: metrics and logs only"
    symptom = ChainStep("symptom", ("ingress",) if "ingress" in ctx.components else (), text)
    cause = ChainStep("cause", (root,),
                      f"an anomaly on {root} that matches no known fault signature (observed: {details})")
    return Analysis((symptom, cause), root, "unknown", "unknown", 0.2)


def analyze(ctx: AnalysisContext, kb: KnowledgeBase | None = None) -> tuple[Analysis, list[Hypothesis]]:
    """The causal chain for one case, and the ranked hypotheses behind it."""
    kb = kb or default_kb()
    findings = all_findings(ctx, kb)
    index = FindingIndex(findings, ctx)
    strong = [f for f in findings if not f.weak]
    if not strong:
        where = ctx.outpost_note or "Outpost reported no anomalous events"
        reason = (f"{where}; no metric moved beyond a robust z-score of {ctx.windows.z_min:g} "
                  "and no fault log line after the injection")
        return no_anomaly(reason), []
    hyps = rank_hypotheses(ctx, index, kb)
    if not hyps:
        # no signature fits: only a metric or log signal beyond the symptom makes it an anomaly of its own
        backing = [f for f in strong if f.key not in TRACE_FINDINGS and f.key != "latency"]
        if not backing:
            n = len(ctx.events)
            return no_anomaly(f"Outpost flagged {n} trace events, but no metric or log signal backs them "
                              "and no fault signature fits"), []
        if ctx.outpost_anomalous is False:  # an unknown fault needs two witnesses: metrics alone drift on clean runs
            top = "; ".join(f.detail for f in sorted(backing, key=lambda f: -f.strength)[:2])
            return no_anomaly(f"no fault signature fits and Outpost found the traces normal; metric deviations "
                              f"alone ({top}) are not called a fault"), []
        return _unknown(ctx, strong), []
    best = hyps[0]
    sig = kb.signatures[best.fault_id]
    writer = _ChainWriter(ctx, index, best, sig.target)
    chain = tuple(writer.step(s) for s in sig.chain)
    analysis = Analysis(chain, best.component, best.fault_id, category_of(best.fault_id), _confidence(best, hyps))
    group = _group_of(best, hyps, ctx) if sig.target == "rank" else None
    return (_on_group(analysis, *group) if group else analysis), hyps
