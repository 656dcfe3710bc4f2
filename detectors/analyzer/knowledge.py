"""The fault-signature knowledge base (``signatures.yaml``), loaded and checked.

The YAML is data: which metric families, log patterns and trace patterns move for
which fault, and the propagation chain each fault produces. This module only gives
it types and refuses a knowledge base that does not cover the catalog exactly.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from chaosbench.errors import PluginInvalid
from chaosbench.faults.catalog import FAULT_IDS

KB_PATH = Path(__file__).with_name("signatures.yaml")

# Findings computed from traces (Outpost events) and gaps, beside the metric families and log patterns.
TRACE_FINDINGS = frozenset(
    {
        "collective_slow",  # a rank's collectives are anomalously long
        "compute_slow",  # a rank's non-collective ops are anomalously long
        "compute_isolated",  # compute slow on one rank, not on the other ranks of its node
        "compute_node",  # compute slow on every rank of a node
        "collective_straggler",  # the rank the others wait for in collectives
        "rank_stall",  # a rank stalled for seconds in a collective call its peers wait for in the transport
        "rank_gap",  # the rank's telemetry vanishes after the injection (a failed worker, never a live hang)
        "collective_bandwidth",  # collective slowdown proportional to the normal duration
        "collective_latency",  # collective slowdown by a roughly constant added delay
    }
)

# Findings derived from several metric series at once (chaosbench.detectors.analyzer.findings.segment_findings).
DERIVED_FINDINGS = frozenset(
    {
        "net_bulk_segments",  # a node's traffic collapsed while its bytes per packet grew: a bandwidth-bound link
        "net_small_segments",  # its traffic collapsed with no larger packets: round trips (delay) bound it
        "net_egress_queue",  # of the nodes whose traffic collapsed, the one whose outgoing packets grew most
    }
)

Scope = Literal["self", "node", "peers", "any"]
StepAt = Literal["symptom", "target", "peers", "node_ranks"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Family(_Model):
    pattern: str
    direction: Literal["up", "down"]
    hard: bool
    finding: str | None = None  # the finding it produces (default: the family name)
    bit: int | None = None  # bitmask gauges: only a newly set bit counts
    explained_by: str | None = None  # a node's change matched by its ranks' metric (regex) is theirs, not the node's
    min_change: float | None = None  # smallest absolute change that counts (a zero baseline makes any z huge)
    min_rel: float | None = None  # smallest relative change that counts (load-driven wobble is smaller)
    hard_rel: float | None = None  # a soft family's change of at least this share of its level counts as hard

    def finding_key(self, name: str) -> str:
        return self.finding or name

    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.IGNORECASE)


class Evidence(_Model):
    finding: str
    weight: float
    scope: Scope = "self"


class StepTemplate(_Model):
    kind: Literal["symptom", "effect", "cause"]
    at: StepAt
    text: str
    finding: str | None = None


class Signature(_Model):
    target: Literal["rank", "node"]
    requires: tuple[str, ...]
    evidence: tuple[Evidence, ...]
    against: tuple[Evidence, ...] = ()
    chain: tuple[StepTemplate, ...]

    @model_validator(mode="after")
    def _chain_shape(self) -> Signature:
        kinds = [s.kind for s in self.chain]
        if len(kinds) < 2 or kinds[0] != "symptom" or kinds[-1] != "cause":
            raise ValueError("chain must start with a symptom and end with a cause")
        if self.chain[-1].at != "target":
            raise ValueError("the cause step must be at the target")
        return self


class KnowledgeBase(_Model):
    version: int
    families: dict[str, Family]
    logs: dict[str, str]
    collectives: str
    signatures: dict[str, Signature]

    def finding_names(self) -> frozenset[str]:
        fams = {fam.finding_key(name) for name, fam in self.families.items()}
        return frozenset(fams) | frozenset(self.logs) | TRACE_FINDINGS | DERIVED_FINDINGS

    @model_validator(mode="after")
    def _complete(self) -> KnowledgeBase:
        if set(self.signatures) != set(FAULT_IDS):
            missing = sorted(set(FAULT_IDS) - set(self.signatures))
            extra = sorted(set(self.signatures) - set(FAULT_IDS))
            raise ValueError(f"signatures must cover the catalog exactly (missing {missing}, unknown {extra})")
        known = self.finding_names()
        for fid, sig in self.signatures.items():
            names = [*sig.requires, *(e.finding for e in (*sig.evidence, *sig.against))]
            names += [s.finding for s in sig.chain if s.finding]
            unknown = sorted(set(names) - known)
            if unknown:
                raise ValueError(f"{fid}: unknown finding(s) {unknown}")
        for name, fam in self.families.items():
            re.compile(fam.pattern)  # a bad pattern fails at load time, not mid-analysis
        return self


def load_kb(path: Path = KB_PATH) -> KnowledgeBase:
    try:
        raw = yaml.safe_load(Path(path).read_text())
        return KnowledgeBase.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        why = " ".join(str(exc).split())
        raise PluginInvalid(f"{path}: cannot read the analyzer knowledge base ({why})") from exc
    except (ValidationError, re.error) as exc:
        first = str(exc).splitlines()
        raise PluginInvalid(f"{path}: invalid knowledge base: {' '.join(first[:3])}") from exc


@lru_cache(maxsize=1)
def default_kb() -> KnowledgeBase:
    return load_kb(KB_PATH)
