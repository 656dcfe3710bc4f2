"""The instruction prompt for LLM backends: a versioned template filled with bounded context.

Each section has a line and character budget; whatever does not fit is cut with an
explicit ``[... N more ... truncated]`` marker, never silently. The template file name
is the prompt version (``analyzer_v1``); change the file name when the meaning changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from chaosbench.detectors.analyzer.context import AnalysisContext
from chaosbench.faults.catalog import CATALOG

PROMPT_VERSION = "analyzer_v1"
TEMPLATE_PATH = Path(__file__).parent / "templates" / f"{PROMPT_VERSION}.txt"
_CUT = " [...truncated]"


@dataclass(frozen=True)
class Budget:
    """Lines and characters per section; the whole prompt stays under ~24k characters by default."""

    events: int = 30
    deviations: int = 40
    gaps: int = 16
    logs: int = 40
    line_chars: int = 240
    section_chars: int = 5000


def bounded(lines: list[str], max_lines: int, max_chars: int, line_chars: int, what: str) -> str:
    """Join lines within budget; anything cut is announced with a marker."""
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        if len(line) > line_chars:
            line = line[: max(0, line_chars - len(_CUT))] + _CUT
        if i >= max_lines or used + len(line) + 1 > max_chars:
            out.append(f"[... {len(lines) - i} more {what} truncated]")
            break
        out.append(line)
        used += len(line) + 1
    return "\n".join(out) if out else f"(no {what})"


def _deployment(ctx: AnalysisContext) -> str:
    topo = ctx.topology
    placement = ", ".join(f"{r} on {topo.rank_node.get(r, '?')}" for r in topo.ranks)
    lines = [
        f"backend: {topo.backend}; engine: {topo.engine}; "
        f"GPU effects emulated: {'yes' if topo.emulated_device else 'no'}",
        f"nodes: {', '.join(topo.nodes)}",
        f"ranks (tensor-parallel workers): {placement}",
        f"components: {', '.join(ctx.components)}",
        f"injection time: {ctx.inject_time:.3f} (unix s)",
    ]
    if ctx.span is not None:
        lines.append(f"metric windows: {ctx.span.describe(ctx.inject_time)}"
                     + (f" ({ctx.span_note})" if ctx.span_note else ""))
    if ctx.outpost == "unavailable":
        lines.append(f"note: {ctx.outpost_note or 'Outpost unavailable'}; reason from metrics and logs only")
    elif ctx.outpost_note:
        lines.append(f"note: {ctx.outpost_note}")
    return "\n".join(lines)


def _catalog() -> str:
    return "\n".join(f"- {s.id} (class {s.fault_class}, target {s.target}): {s.description}" for s in CATALOG)


def _events(ctx: AnalysisContext) -> list[str]:
    return [  # the path last: a long one is what the line budget cuts
        f"- {e.component} {e.name} observed={e.dur / 1000:.3g} ms expected={e.expected_dur / 1000:.3g} ms "
        f"score={e.score:.3g} t={e.ts / 1e6 - ctx.inject_time:+.1f} s worker={e.worker} thread={e.thread} "
        f"path={e.path or '-'}"
        for e in ctx.events
    ]


def _logs(ctx: AnalysisContext) -> list[str]:
    return [f"- t={ln.time - ctx.inject_time:+.1f} s {ln.component} {ln.level}: {ln.message}" for ln in ctx.logs]


def build_prompt(ctx: AnalysisContext, budget: Budget | None = None) -> str:
    b = budget or Budget()
    sections = {
        "deployment": _deployment(ctx),
        "catalog": _catalog(),
        "events": bounded(_events(ctx), b.events, b.section_chars, b.line_chars, "events"),
        "deviations": bounded([f"- {d.describe()}" for d in ctx.deviations], b.deviations, b.section_chars,
                              b.line_chars, "metric deviations"),
        "gaps": bounded([f"- {g.component}: {g.share:.0%} of its series; {g.before_fill:.0%} of samples before, "
                         f"{g.after_fill:.0%} after"
                         for g in ctx.gaps], b.gaps, b.section_chars, b.line_chars, "telemetry gaps"),
        "logs": bounded(_logs(ctx), b.logs, b.section_chars, b.line_chars, "log lines"),
    }
    if ctx.outpost == "unavailable":
        sections["events"] = f"(Outpost unavailable: {ctx.outpost_note})"
    return Template(TEMPLATE_PATH.read_text()).safe_substitute(sections)


__all__ = ["PROMPT_VERSION", "Budget", "bounded", "build_prompt"]
