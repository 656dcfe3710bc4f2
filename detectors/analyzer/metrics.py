"""Analyzer metrics: valid-format rate, ROUGE-L against our reference chains, fault-class,
category and root-component accuracy, per fault.

References (``references/<fault-id>.yaml``) are written by us, independently of the
rules backend's templates. ROUGE-L comes from the ``rouge-score`` package; chains are
compared as plain sentences with component names generalized (``rank-2`` -> ``rank``)
and the observed-value parentheticals removed, so only the causal story is compared.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from chaosbench.case import GroundTruth
from chaosbench.detectors.analyzer.output import AnalysisFormatError, parse
from chaosbench.detectors.api import Result
from chaosbench.errors import InputInvalid
from chaosbench.faults.catalog import FAULT_IDS

REFERENCES_DIR = Path(__file__).parent / "references"
_EVIDENCE = re.compile(r"\s*\((observed|expected)\b")
_COMPONENT = re.compile(r"\b(rank|node)-\d+\b")


class _RefStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["symptom", "effect", "cause"]
    text: str


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    fault_class: str
    category: str
    root: Literal["rank", "node"]
    chain: tuple[_RefStep, ...]

    def text(self) -> str:
        return " ".join(s.text for s in self.chain)


@lru_cache(maxsize=1)
def references() -> dict[str, Reference]:
    """Every reference chain, keyed by fault id; exactly one per catalog fault."""
    refs: dict[str, Reference] = {}
    for f in sorted(REFERENCES_DIR.glob("*.yaml")):
        try:
            ref = Reference.model_validate(yaml.safe_load(f.read_text()))
        except (yaml.YAMLError, ValidationError) as exc:
            raise InputInvalid(f"{f}: invalid reference chain: {str(exc).splitlines()[0]}") from exc
        if ref.fault_class != f.stem:
            raise InputInvalid(f"{f}: fault_class {ref.fault_class!r} does not match the file name")
        refs[ref.fault_class] = ref
    missing = sorted(set(FAULT_IDS) - set(refs))
    if missing:
        raise InputInvalid(f"{REFERENCES_DIR}: no reference chain for {', '.join(missing)}")
    return refs


def strip_evidence(text: str) -> str:
    """Drop '(observed: ...)' / '(expected, not observed)' parentheticals, nested parentheses included."""
    out, i = [], 0
    while (m := _EVIDENCE.search(text, i)) is not None:
        out.append(text[i : m.start()])
        j, depth = text.index("(", m.start()), 0
        while j < len(text):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                break
        i = j
    out.append(text[i:])
    return "".join(out)


def normalize_chain(text: str) -> str:
    return " ".join(_COMPONENT.sub(r"\1", strip_evidence(text)).split())


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of two chains after normalization."""
    return float(_scorer().score(normalize_chain(reference), normalize_chain(candidate))["rougeL"].fmeasure)


def valid_format(text: str | None, components: set[str] | None = None) -> bool:
    try:
        parse(text or "", components)
    except AnalysisFormatError:
        return False
    return True


def valid_format_rate(texts: list[str | None]) -> float:
    return sum(valid_format(t) for t in texts) / len(texts) if texts else 0.0


@dataclass(frozen=True)
class CaseScore:
    case: str
    fault_id: str  # the truth: a fault id, or "none" for a clean run
    component: str  # the true root component, "none" for a clean run
    predicted_fault: str | None  # None when the analyzer failed
    predicted_root: str | None
    valid: bool  # the final answer passed the parser
    first_try_valid: bool
    attempts: int  # answers asked for (LLM backends retry on an invalid format)
    valid_attempts: int
    rouge_l: float | None  # None for clean runs and failed analyses
    confidence: float | None


def score_case(case: str, result: Result, truth: GroundTruth) -> CaseScore:
    fault = truth.get("fault_id") or "none"
    comp = truth.get("component") or "none"
    extra = result.extra or {}
    valid = result.status == "ok" and valid_format(result.explanation)
    attempts = int(extra.get("format_attempts", 1))
    valid_attempts = int(extra.get("format_valid_attempts", 1 if valid else 0))
    first_ok = valid and attempts == 1 and valid_attempts >= 1
    analysis = parse(result.explanation or "") if valid else None
    rouge = None
    if analysis is not None and fault in FAULT_IDS:
        rouge = rouge_l(analysis.chain_text(), references()[fault].text())
    return CaseScore(
        case=case,
        fault_id=fault,
        component=comp,
        predicted_fault=analysis.fault_class if analysis else None,
        predicted_root=analysis.root_cause if analysis else None,
        valid=valid,
        first_try_valid=first_ok,
        attempts=attempts,
        valid_attempts=valid_attempts if valid else 0,
        rouge_l=rouge,
        confidence=analysis.confidence if analysis else None,
    )


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _category(fault: str | None) -> str | None:
    from chaosbench.detectors.analyzer.output import category_of

    return category_of(fault) if fault else None


def summarize(scores: list[CaseScore]) -> dict[str, dict[str, float | int | None]]:
    """Per fault id (and "all"): cases, valid-format rate (final answer, first try, per attempt), fault-class,
    category and root-component accuracy, mean ROUGE-L. A failed analysis counts as wrong everywhere."""
    groups: dict[str, list[CaseScore]] = defaultdict(list)
    for s in scores:
        groups[s.fault_id].append(s)
        groups["all"].append(s)
    table: dict[str, dict[str, float | int | None]] = {}
    for fault in sorted(groups, key=lambda f: (f == "all", f)):
        g = groups[fault]
        n = len(g)
        table[fault] = {
            "cases": n,
            "valid_format_rate": sum(s.valid for s in g) / n,
            "first_try_valid_rate": sum(s.first_try_valid for s in g) / n,
            "attempt_valid_rate": sum(s.valid_attempts for s in g) / max(1, sum(s.attempts for s in g)),
            "fault_class_accuracy": sum(s.predicted_fault == s.fault_id for s in g) / n,
            "category_accuracy": sum(_category(s.predicted_fault) == _category(s.fault_id) for s in g) / n,
            "component_accuracy": sum(s.predicted_root == s.component for s in g) / n,
            "rouge_l": _mean([s.rouge_l for s in g if s.rouge_l is not None]),
        }
    return table
