"""KAT Analyzer: an interpretable causal chain (symptom -> effects -> root cause) per case.

``detect(case)`` is the detector contract (rules backend, offline, deterministic).
``explain(case, backend="rules"|"openai")`` picks the backend. ``Result.explanation``
holds the ``<analysis>`` block (chaosbench.detectors.analyzer.output), ``Result.ranking`` the root
cause first, ``Result.extra`` the fault class, chain and confidence.
"""

from __future__ import annotations

import time
from typing import Literal

from chaosbench.case import CaseView
from chaosbench.detectors.api import RankedComponent, Result
from chaosbench.errors import InputInvalid

METHOD = "kat-analyzer"
Backend = Literal["rules", "openai"]
BACKENDS: tuple[str, ...] = ("rules", "openai")

__all__ = ["BACKENDS", "METHOD", "detect", "explain"]


def _ranking(root: str, hyps: list, outpost: tuple[RankedComponent, ...]) -> tuple[RankedComponent, ...]:
    out: dict[str, RankedComponent] = {}
    if root != "none":
        out[root] = RankedComponent(root, 1.0)
    for h in hyps:
        if h.component not in out:
            out[h.component] = RankedComponent(h.component, round(h.score / (1 + h.score), 4))
    for rc in outpost:
        if rc.component not in out:
            out[rc.component] = RankedComponent(rc.component, 0.0, rc.metric, rc.thread)
    return tuple(out.values())


def _result(analysis, text: str, ctx, hyps: list, backend: str, extra: dict, started: float) -> Result:
    return Result(
        method=METHOD,
        ranking=_ranking(analysis.root_cause, hyps, ctx.outpost_ranking),
        anomalous=analysis.fault_class != "none",
        explanation=text,
        runtime_s=time.perf_counter() - started,
        extra={
            "backend": backend,
            "fault_class": analysis.fault_class,
            "category": analysis.category,
            "root_cause": analysis.root_cause,
            "chain": analysis.chain_records(),
            "confidence": analysis.confidence,
            "outpost": ctx.outpost,
            "outpost_note": ctx.outpost_note,
            **extra,
        },
    )


def explain(case: CaseView, backend: str = "rules") -> Result:
    """Analyze one case with the named backend. Raises chaosbench.errors types on expected failures
    (unknown backend, LLM not configured or unreachable, LLM answers never in format)."""
    from chaosbench.detectors.analyzer.context import build_context
    from chaosbench.detectors.analyzer.output import AnalysisFormatError, parse, render
    from chaosbench.detectors.analyzer.rules import analyze

    if backend not in BACKENDS:
        from chaosbench.registry import did_you_mean

        raise InputInvalid(f"unknown analyzer backend {backend!r}{did_you_mean(backend, list(BACKENDS))}")
    started = time.perf_counter()
    ctx = build_context(case)
    if backend == "rules":
        analysis, hyps = analyze(ctx)
        text = render(analysis)
        try:  # the valid-format rate is measured by the same parser for every backend, never assumed
            parse(text, set(ctx.components))
        except AnalysisFormatError as exc:
            return Result(method=METHOD, status="failed", error=f"rules backend: {exc}",
                          runtime_s=time.perf_counter() - started,
                          extra={"backend": "rules", "valid_format": False, "format_attempts": 1,
                                 "format_valid_attempts": 0})
        hyp_view = [{"fault_class": h.fault_id, "component": h.component, "score": round(h.score, 3)} for h in hyps[:5]]
        extra = {"valid_format": True, "format_attempts": 1, "format_valid_attempts": 1, "hypotheses": hyp_view}
        return _result(analysis, text, ctx, hyps, "rules", extra, started)
    from chaosbench.detectors.analyzer.openai_backend import LLMConfig, LLMFormatError, ask, format_stats

    try:
        answer = ask(ctx, LLMConfig.from_env())
    except LLMFormatError as exc:  # a model quality outcome, recorded (not an environment error)
        stats = format_stats(exc.attempts, 0, exc.errors)
        return Result(method=METHOD, status="failed", error=str(exc), runtime_s=time.perf_counter() - started,
                      extra={"backend": "openai", "valid_format": False, **stats})
    extra = {"valid_format": True, **answer.stats(), "model": answer.model}
    return _result(answer.analysis, answer.text, ctx, [], "openai", extra, started)


def detect(case: CaseView) -> Result:
    """The detector contract: the offline rules backend."""
    return explain(case, "rules")
