"""The Analyzer's answer format: one tagged ``<analysis>`` block, and its strict parser.

Every backend (rules, any LLM) must produce exactly this block; the parser is the
only judge of "valid format". Example::

    <analysis>
    format: chaosbench-analysis/v1
    chain:
    1. symptom | ingress | request latency rose after the injection time (ingress_latency z=+12.3)
    2. effect | rank-0, rank-1, rank-3 | peers wait in all-reduce for rank-2
    3. effect | rank-2 | every kernel on rank-2 runs slower
    4. cause | rank-2 | SM clock locked low on rank-2, power unchanged
    root_cause: rank-2
    fault_class: gpu-clock-lock
    category: GPU
    confidence: 0.85
    </analysis>

Rules: the chain runs from the symptom to the root cause (first step ``symptom``,
last step ``cause``, ``effect`` in between); ``fault_class`` is a fault id of the
catalog, ``unknown`` (something is wrong, no signature fits) or ``none`` (no anomaly:
a single ``none`` step whose text starts with "no anomaly detected");
``category`` is that fault's class in the catalog; ``confidence`` is in [0, 1].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from chaosbench.errors import ChaosbenchError
from chaosbench.faults.catalog import FAULTS

FORMAT_ID = "chaosbench-analysis/v1"
NO_ANOMALY = "no anomaly detected"
StepKind = Literal["symptom", "effect", "cause", "none"]

_BLOCK = re.compile(r"<analysis>(.*?)</analysis>", re.DOTALL | re.IGNORECASE)
_STEP = re.compile(r"^(\d+)[.)]\s*(symptom|effect|cause|none)\s*\|\s*([^|]*?)\s*\|\s*(.+)$", re.IGNORECASE)
_KEY = re.compile(r"^([a-z_]+)\s*:\s*(.*)$")
_COMPONENT = re.compile(r"^[a-z][a-z0-9.-]*$")  # rank-2, node-0, replica-1.stage-0
_KEYS = ("format", "chain", "root_cause", "fault_class", "category", "confidence")


class AnalysisFormatError(ChaosbenchError):
    """An answer that is not a valid ``<analysis>`` block (message: one line, what is wrong)."""


@dataclass(frozen=True)
class ChainStep:
    kind: StepKind
    components: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Analysis:
    chain: tuple[ChainStep, ...]
    root_cause: str  # a component, or "none"
    fault_class: str  # a fault id, "unknown" or "none"
    category: str  # the fault's class in the catalog (GPU, NCCL, CPU, memory, network), "unknown" or "none"
    confidence: float

    def chain_text(self) -> str:
        """The chain as plain sentences, symptom first (what ROUGE-L compares)."""
        return " ".join(step.text.rstrip(".") + "." for step in self.chain)

    def chain_records(self) -> list[dict[str, object]]:
        return [{"kind": s.kind, "components": list(s.components), "text": s.text} for s in self.chain]


def category_of(fault_class: str) -> str:
    if fault_class in FAULTS:
        return FAULTS[fault_class].fault_class
    return fault_class  # "none" / "unknown"


def no_anomaly(reason: str) -> Analysis:
    text = f"{NO_ANOMALY}: {reason}" if reason else NO_ANOMALY
    return Analysis((ChainStep("none", (), text),), "none", "none", "none", 1.0)


def render(analysis: Analysis) -> str:
    """The tagged block for an Analysis (always passes ``parse``)."""
    lines = ["<analysis>", f"format: {FORMAT_ID}", "chain:"]
    for i, step in enumerate(analysis.chain, 1):
        comps = ", ".join(step.components) or "-"
        text = " ".join(step.text.split()).replace("|", "/")
        lines.append(f"{i}. {step.kind} | {comps} | {text}")
    lines += [
        f"root_cause: {analysis.root_cause}",
        f"fault_class: {analysis.fault_class}",
        f"category: {analysis.category}",
        f"confidence: {analysis.confidence:.2f}",
        "</analysis>",
    ]
    return "\n".join(lines)


def _fail(msg: str) -> AnalysisFormatError:
    return AnalysisFormatError(f"invalid analysis block: {msg}")


def _split_fields(body: str) -> tuple[dict[str, str], list[str]]:
    fields: dict[str, str] = {}
    steps: list[str] = []
    in_chain = False
    for raw in body.splitlines():
        line = raw.strip().strip("`").strip()
        if not line:
            continue
        step_like = re.match(r"^\d+[.)]", line)
        if in_chain and step_like:
            steps.append(line)
            continue
        m = _KEY.match(line)
        if not m:
            raise _fail(f"unexpected line {line[:80]!r}")
        key, value = m.group(1).lower(), m.group(2).strip()
        if key not in _KEYS:
            raise _fail(f"unknown key {key!r} (expected {', '.join(_KEYS)})")
        if key in fields:
            raise _fail(f"duplicate key {key!r}")
        fields[key] = value
        in_chain = key == "chain"
    missing = [k for k in _KEYS if k not in fields]
    if missing:
        raise _fail(f"missing key(s) {', '.join(missing)}")
    return fields, steps


def _parse_step(line: str, expected_no: int, components: frozenset[str] | None) -> ChainStep:
    m = _STEP.match(line)
    if not m:
        raise _fail(f"chain step {line[:80]!r} is not 'N. symptom|effect|cause | components | text'")
    if int(m.group(1)) != expected_no:
        raise _fail(f"chain step numbered {m.group(1)}, expected {expected_no}")
    raw = m.group(3).strip()
    comps = () if raw in ("", "-") else tuple(c.strip() for c in raw.split(","))
    for c in comps:
        if not _COMPONENT.match(c):
            raise _fail(f"step {expected_no}: {c!r} is not a component name")
        if components is not None and c not in components:
            raise _fail(f"step {expected_no}: unknown component {c!r}")
    return ChainStep(m.group(2).lower(), comps, m.group(4).strip())  # type: ignore[arg-type]


def _check_chain(chain: tuple[ChainStep, ...], fault_class: str, root: str) -> None:
    if fault_class == "none":
        if len(chain) != 1 or chain[0].kind != "none" or not chain[0].text.lower().startswith(NO_ANOMALY):
            raise _fail(f"fault_class none needs one step 'none | - | {NO_ANOMALY}...'")
        if root != "none":
            raise _fail("fault_class none needs root_cause none")
        return
    if len(chain) < 2:
        raise _fail("the chain needs at least a symptom and a cause")
    kinds = [s.kind for s in chain]
    if kinds[0] != "symptom" or kinds[-1] != "cause" or any(k not in ("effect",) for k in kinds[1:-1]):
        raise _fail(f"chain kinds {kinds} must be symptom, effect..., cause")
    if root not in chain[-1].components:
        raise _fail(f"root_cause {root!r} is not a component of the cause step")


def _parse_confidence(value: str) -> float:
    try:
        conf = float(value)
    except ValueError:
        raise _fail(f"confidence {value!r} is not a number") from None
    if not 0.0 <= conf <= 1.0:
        raise _fail(f"confidence {conf} is outside [0, 1]")
    return conf


def parse(text: str, components: frozenset[str] | set[str] | None = None) -> Analysis:
    """Parse and validate an answer holding exactly one ``<analysis>`` block.

    ``components``: when given, every component named must be one of them (catches
    invented names). Raises ``AnalysisFormatError`` with a one-line reason.
    """
    blocks = _BLOCK.findall(text or "")
    if len(blocks) != 1:
        raise _fail(f"expected exactly one <analysis>...</analysis> block, found {len(blocks)}")
    fields, step_lines = _split_fields(blocks[0])
    if fields["format"] != FORMAT_ID:
        raise _fail(f"format is {fields['format']!r}, expected {FORMAT_ID!r}")
    if fields["chain"]:
        raise _fail("'chain:' must be followed by numbered steps on their own lines")
    comps = frozenset(components) if components is not None else None
    chain = tuple(_parse_step(line, i, comps) for i, line in enumerate(step_lines, 1))
    fault_class, root, category = fields["fault_class"], fields["root_cause"], fields["category"]
    if fault_class not in FAULTS and fault_class not in ("none", "unknown"):
        raise _fail(f"fault_class {fault_class!r} is not a catalog fault id, 'unknown' or 'none'")
    if category != category_of(fault_class):
        raise _fail(f"category {category!r} does not match fault_class {fault_class!r} ({category_of(fault_class)})")
    if root != "none" and (not _COMPONENT.match(root) or (comps is not None and root not in comps)):
        raise _fail(f"root_cause {root!r} is not a known component")
    _check_chain(chain, fault_class, root)
    return Analysis(chain, root, fault_class, category, _parse_confidence(fields["confidence"]))
