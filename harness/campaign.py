"""Campaigns: many cases sampled from one seed, each a full scenario derived from a base file.

A campaign file (``kind: Campaign``) names a base scenario (deployment, workload, telemetry, traces, steady
state), a seed, a case count and what to draw per case: clean or which fault (weighted mix), the target (any
rank, node, replica or stage the fault's spec allows on the drawn topology: replicas and stages only where it has
more than one replica or stage, a kind first, then a target of that kind), the parameters (from the ranges each fault
declares in ``chaosbench.faults.catalog.SAMPLING``), onset and duration, load level and arrival process, the
topology variant, and optionally a second fault overlapping the first on another component (compound cases).

Reproducibility: case ``i`` is a function of ``(seed, i)`` only (``draw``), so ``count`` can grow without
changing earlier cases. Three independent sources:
- clean or which fault, and the fault's topology and target: a golden-ratio (Weyl) sequence
  ``u_i = frac(u0 + i * 0.618...)`` with ``u0`` drawn from the seed; ``u_i < clean_fraction`` is clean, the rest
  of [0, 1) is split by the fault weights, and the position inside a fault's share picks the topology variant,
  then the target kind (where a layout offers several), then the target. Any run of consecutive indices holds the clean fraction, the mix and each fault's spread
  over its targets to within a case or two, not only on average.
- the rest of the answer (parameters, a clean case's topology, the compound second fault):
  ``numpy.random.default_rng([seed, i])``.
- what a detector can observe (onset and duration of the fault window, users, qps, arrival, workload seed):
  ``default_rng([seed, i, 1])``, drawn identically for clean and faulty cases. A run may add a secret ``salt``
  (``default_rng([seed, i, 1, salt])``): the published seed then gives the draw of answers but cannot match a
  blind case to its plan entry by its load or timing.

Split rule: case ``i`` is ``dev`` when ``sha256("chaosbench-split:<seed>:<i>")``, read as a fraction of 2**256,
is below ``dev_share`` (default 0.3), else ``test``. It depends on (seed, i) only, so it is stable when ``count``
grows. Detectors are tuned on dev; test is scored once per release.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from chaosbench.errors import InputInvalid, ScenarioInvalid
from chaosbench.faults.catalog import CATALOG, FAULTS, SAMPLING
from chaosbench.faults.spec import FaultSpec, TargetKind
from chaosbench.registry import did_you_mean
from chaosbench.rundir import read_labels_file
from chaosbench.scenario import (
    Metadata,
    Scenario,
    Strict,
    Suite,
    Target,
    TopologySpec,
    Verify,
    _read_yaml,
    deep_merge,
    load_document,
    parse_document,
    validate_model,
)
from chaosbench.types import Duration, between, format_duration

GOLDEN = (math.sqrt(5) - 1) / 2
INTENSITY_BINS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
CARD_SCHEMA = "chaosbench/dataset-card/v1"


# ----------------------------------------------------------------------------- file format


class Span(Strict):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> Span:
        if self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        return self


class IntSpan(Span):
    min: int
    max: int


class DurationSpan(Span):
    min: Duration
    max: Duration


class CampaignWorkload(Strict):
    """Per-case load draws; a field left out keeps the base scenario's value for every case."""

    users: IntSpan | None = Field(None, description="concurrent users, uniform integer in [min, max]")
    qps: Span | None = Field(None, description="target request rate, uniform in [min, max]")
    arrival: list[Literal["constant", "poisson"]] | None = Field(None, min_length=1, description="drawn uniformly")


class TopologyVariant(Strict):
    name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]*$",
                             description="default: n<nodes>-tp<tp>, or n<nodes>-dp<dp>-pp<pp>-tp<tp>")
    nodes: between(int, 1, 64, "emulated nodes (local) or GPU nodes (k8s)")
    tensor_parallel: between(int, 1, 64, "ranks per pipeline stage (tensor-parallel group)")
    pipeline_parallel: between(int, 1, 64, "pipeline stages per replica") = 1
    data_parallel: between(int, 1, 16, "model replicas") = 1

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.single_group:
            return f"n{self.nodes}-tp{self.tensor_parallel}"
        return f"n{self.nodes}-dp{self.data_parallel}-pp{self.pipeline_parallel}-tp{self.tensor_parallel}"

    @property
    def single_group(self) -> bool:
        return self.data_parallel == 1 and self.pipeline_parallel == 1

    def topology(self) -> TopologySpec:
        return TopologySpec(nodes=self.nodes, tensor_parallel=self.tensor_parallel,
                            pipeline_parallel=self.pipeline_parallel, data_parallel=self.data_parallel)

    def target_kinds(self, spec: FaultSpec) -> list[TargetKind]:
        """The kinds a campaign draws for the fault here: on one replica of one stage its primary kind only (the
        draws of that layout predate replicas and stages); otherwise every kind it allows that names a part
        smaller than the whole: replicas when data_parallel > 1, stages when pipeline_parallel > 1."""
        if self.single_group:
            return [spec.target]
        return [k for k in spec.target_kinds
                if (k != "replica" or self.data_parallel > 1) and (k != "stage" or self.pipeline_parallel > 1)]

    def targets(self, kind: str) -> list[dict[str, Any]]:
        """Every target of this kind on this topology, as chaosbench.scenario.Target takes it."""
        topo = self.topology()
        if kind == "rank":
            return [{"rank": r} for r in range(topo.world_size)]
        if kind == "replica":
            return [{"replica": d} for d in range(self.data_parallel)]
        if kind == "stage":
            return [{"replica": d, "stage": p} for d in range(self.data_parallel)
                    for p in range(self.pipeline_parallel)]
        return [{"node": n} for n in topo.node_names()]

    def ranks(self, target: dict[str, Any]) -> set[int]:
        """The ranks a rank, replica or stage target holds (empty for a node)."""
        return set() if "node" in target else set(self.topology().ranks_of(target_component(target)))


class CampaignSpec(Strict):
    base: str = Field(description="scenario file (or _fragment) the cases derive from, relative to this file")
    seed: between(int, 0, 2**63 - 1, "the campaign seed: case i is drawn from (seed, i)")
    count: between(int, 1, 100_000, "number of cases")
    faults: dict[str, float] = Field(
        default_factory=dict, description="fault mix: weight per fault id (relative); empty: every fault, weight 1"
    )
    clean_fraction: between(float, 0, 1, "share of cases without a fault") = 0.2
    compound_fraction: between(float, 0, 1, "share of faulty cases with a second, overlapping fault") = 0.0
    dev_share: between(float, 0, 1, "share of cases in the dev split (the rest is test)") = 0.3
    onset: DurationSpan = Field(description="fault start (clean: the nominal start), seconds after load start")
    duration: DurationSpan = Field(description="fault (clean: the nominal) window length")
    workload: CampaignWorkload = CampaignWorkload()
    topologies: list[TopologyVariant] = Field(min_length=1, description="topology variants, drawn uniformly")
    verify: Verify = Verify(timeout="15s")

    @model_validator(mode="after")
    def _mix(self) -> CampaignSpec:
        if any(w < 0 for w in self.faults.values()):
            raise ValueError("faults: weights must be >= 0")
        if self.clean_fraction < 1 and self.faults and not any(self.faults.values()):
            raise ValueError("faults: every weight is 0 but clean_fraction < 1")
        return self

    def mix(self) -> list[tuple[str, float]]:
        """(fault id, weight > 0) in catalog order."""
        weights = self.faults or {s.id: 1.0 for s in CATALOG}
        return [(s.id, float(weights[s.id])) for s in CATALOG if weights.get(s.id, 0) > 0]


class Campaign(Strict):
    api_version: Literal["chaosbench/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Campaign"]
    metadata: Metadata
    spec: CampaignSpec

    @model_validator(mode="after")
    def _name_fits(self) -> Campaign:
        longest = f"campaign-{self.metadata.name}-{self.spec.count - 1}"
        if len(longest) > 63:
            raise ValueError(f"metadata.name: too long for case names ({longest!r} exceeds 63 characters)")
        return self


# ----------------------------------------------------------------------------- the draw


@dataclass(frozen=True)
class FaultDraw:
    id: str
    target: dict[str, Any]  # as chaosbench.scenario.Target takes it: {"rank": 2}, {"node": "node-1"}, {"replica": 1}
    params: dict[str, Any]
    start: float  # seconds after load start
    duration: float

    @property
    def component(self) -> str:
        return target_component(self.target)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "target": dict(self.target), "params": dict(self.params), "start": self.start,
                "duration": self.duration}


@dataclass(frozen=True)
class PlannedCase:
    index: int
    split: Literal["dev", "test"]
    faults: tuple[FaultDraw, ...]  # empty: clean; two: compound (the first is the primary fault)
    onset: float  # the nominal window, drawn for clean cases exactly as for faulty ones
    duration: float
    topology: str
    workload: dict[str, Any] = field(default_factory=dict)
    intensity: float | None = None  # the primary fault's, 0..1; None for clean
    target_kind: TargetKind | None = None

    def to_json(self) -> dict[str, Any]:
        # case_id stays None: ids are random and assigned at run time, so the public seed cannot map ids to answers
        return {"index": self.index, "case_id": None, "split": self.split,
                "faults": [f.to_json() for f in self.faults], "topology": self.topology,
                "workload": dict(self.workload), "onset": self.onset, "duration": self.duration,
                "intensity": self.intensity, "target_kind": self.target_kind}


def target_component(target: dict[str, Any]) -> str:
    """The component a target dict names: node-1, rank-2, replica-1, replica-1.stage-0."""
    return Target.model_validate(target).component


def split_of(seed: int, index: int, dev_share: float) -> Literal["dev", "test"]:
    digest = hashlib.sha256(f"chaosbench-split:{seed}:{index}".encode()).digest()
    return "dev" if int.from_bytes(digest, "big") / 2**256 < dev_share else "test"


def _kind_position(seed: int, index: int) -> float:
    u0 = np.random.default_rng([seed]).random()
    return (u0 + index * GOLDEN) % 1.0


def _pick_weighted(mix: list[tuple[str, float]], v: float) -> tuple[str, float]:
    """The entry whose share of [0, 1) holds ``v``, and v's position inside that share (in [0, 1))."""
    total = sum(w for _, w in mix)
    acc = 0.0
    for fid, w in mix:
        share = w / total
        if v < acc + share:
            return fid, min(max((v - acc) / share, 0.0), 1 - 1e-12)
        acc += share
    return mix[-1][0], 1 - 1e-12


def _pick(options: list, v: float) -> tuple[Any, float]:
    """options[floor(v * n)] and the position left inside that option's slot."""
    scaled = v * len(options)
    i = min(int(scaled), len(options) - 1)
    return options[i], min(scaled - i, 1 - 1e-12)


def _draw_params(fault_id: str, rng: np.random.Generator) -> dict[str, Any]:
    s = SAMPLING[fault_id]
    params: dict[str, Any] = {name: r.value(float(rng.random())) for name, r in s.ranges.items()}
    params.update({name: opts[int(rng.integers(len(opts)))] for name, opts in s.choices.items()})
    return params


def draw(campaign: Campaign, index: int, salt: int | None = None) -> PlannedCase:
    """Case ``index`` of the campaign: a function of (seed, index) (and ``salt`` for the observable draws)."""
    spec = campaign.spec
    answer = np.random.default_rng([spec.seed, index])
    seen = np.random.default_rng([spec.seed, index, 1] + ([salt] if salt is not None else []))

    # what a detector can observe, drawn first and identically for every case
    onset = round(float(seen.uniform(spec.onset.min, spec.onset.max)), 1)
    duration = round(float(seen.uniform(spec.duration.min, spec.duration.max)), 1)
    workload: dict[str, Any] = {}
    w = spec.workload
    users = int(seen.integers(w.users.min, w.users.max + 1)) if w.users else None
    qps = round(float(seen.uniform(w.qps.min, w.qps.max)), 2) if w.qps else None
    arrival = w.arrival[int(seen.integers(len(w.arrival)))] if w.arrival else None
    for key, value in (("users", users), ("qps", qps), ("arrival", arrival)):
        if value is not None:
            workload[key] = value
    workload["seed"] = int(seen.integers(1, 2**31 - 1))
    second_offset = float(seen.uniform(0.0, 0.5))
    second_duration = float(seen.uniform(spec.duration.min, spec.duration.max))

    split = split_of(spec.seed, index, spec.dev_share)
    mix = spec.mix()
    u = _kind_position(spec.seed, index)
    if u < spec.clean_fraction or not mix:
        variant = spec.topologies[int(answer.integers(len(spec.topologies)))]
        return PlannedCase(index, split, (), onset, duration, variant.label, workload)

    # the fault, then topology and target from the position inside the fault's share: every fault is spread
    # evenly over the topologies and over its targets on each, for any run of consecutive indices
    first_id, v = _pick_weighted(mix, (u - spec.clean_fraction) / (1 - spec.clean_fraction))
    variant, v = _pick(list(spec.topologies), v)
    kind, v = _pick(variant.target_kinds(FAULTS[first_id]), v)  # one kind: v unchanged
    target, _ = _pick(variant.targets(kind), v)
    params = _draw_params(first_id, answer)
    faults = [FaultDraw(first_id, target, params, onset, duration)]

    if answer.random() < spec.compound_fraction:
        others = [(fid, wt) for fid, wt in mix if fid != first_id]
        if others:
            second_id, _ = _pick_weighted(others, float(answer.random()))
            kinds = variant.target_kinds(FAULTS[second_id])
            second_kind = kinds[int(answer.integers(len(kinds)))] if len(kinds) > 1 else kinds[0]
            taken = variant.ranks(target)  # another component: no rank of the first fault's target
            options = [t for t in variant.targets(second_kind) if t != target and not variant.ranks(t) & taken]
            if options:
                second_target = options[int(answer.integers(len(options)))]
                start = round(onset + second_offset * duration, 1)
                latest_end = spec.onset.max + spec.duration.max
                length = round(min(second_duration, latest_end - start), 1)
                faults.append(FaultDraw(second_id, second_target, _draw_params(second_id, answer), start, length))

    return PlannedCase(index, split, tuple(faults), onset, duration, variant.label, workload,
                       intensity=SAMPLING[first_id].intensity(params), target_kind=kind)


def plan(campaign: Campaign, salt: int | None = None) -> list[PlannedCase]:
    return [draw(campaign, i, salt) for i in range(campaign.spec.count)]


# ----------------------------------------------------------------------------- cases as scenarios


def base_path(campaign_path: str | Path, campaign: Campaign) -> Path:
    return Path(campaign_path).parent / campaign.spec.base


def _case_document(campaign: Campaign, case: PlannedCase, base_doc: dict[str, Any]) -> dict[str, Any]:
    spec = campaign.spec
    variant = next(t for t in spec.topologies if t.label == case.topology)
    steps = [{"id": f.id, "target": dict(f.target), "params": dict(f.params), "start": format_duration(f.start),
              "duration": format_duration(f.duration), "verify": spec.verify.model_dump(mode="json")}
             for f in case.faults]
    workload = {k: v for k, v in case.workload.items()}
    if "users" in workload:
        workload["spawn_rate"] = float(workload["users"])
    over = {
        "spec": {
            "deployment": {"topology": {"nodes": variant.nodes, "tensor_parallel": variant.tensor_parallel,
                                        "pipeline_parallel": variant.pipeline_parallel,
                                        "data_parallel": variant.data_parallel}},
            "workload": workload,
            "nominal_inject": format_duration(case.onset),
            "nominal_duration": format_duration(case.duration),
        }
    }
    doc = deep_merge(base_doc, over)
    doc["spec"]["faults"] = steps
    doc["apiVersion"], doc["kind"] = "chaosbench/v1alpha1", "Scenario"
    doc["metadata"] = {"name": f"campaign-{campaign.metadata.name}-{case.index}", "version": campaign.metadata.version,
                       "labels": {"campaign": campaign.metadata.name},
                       "description": f"case {case.index} of campaign {campaign.metadata.name}"}
    return doc


def _base_document(campaign: Campaign, campaign_path: str | Path) -> dict[str, Any]:
    path = base_path(campaign_path, campaign)
    if not path.is_file():
        raise ScenarioInvalid([f"{campaign_path}: spec.base: no such file {campaign.spec.base!r} (resolved: {path})"])
    doc = _read_yaml(path)
    if doc.get("kind", "Scenario") != "Scenario":
        raise ScenarioInvalid([f"{campaign_path}: spec.base: {path} is a {doc.get('kind')}, not a Scenario"])
    return doc


def to_scenario(campaign: Campaign, case: PlannedCase, campaign_path: str | Path) -> Scenario:
    """The case as a fully validated scenario that chaosbench.runner.run_scenario can run."""
    doc = _case_document(campaign, case, _base_document(campaign, campaign_path))
    result = parse_document(doc, f"{campaign_path} (case {case.index})")
    assert isinstance(result, Scenario)
    return result


def deployment_key(scenario: Scenario) -> str:
    """Cases with equal keys can share one testbed: same backend, engine, topology, model (and telemetry step);
    the workload and the faults may differ."""
    dep = scenario.spec.deployment
    blob = json.dumps({"deployment": dep.model_dump(mode="json"), "step": scenario.spec.telemetry.step},
                      sort_keys=True)
    t = dep.topology
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    pp = f"-pp{t.pipeline_parallel}" if t.pipeline_parallel > 1 else ""
    return f"{dep.backend}-{dep.engine}-n{t.nodes}-tp{t.tensor_parallel}{pp}-dp{t.data_parallel}-{digest}"


# ----------------------------------------------------------------------------- loading


def _probe(campaign: Campaign, case: PlannedCase, base_doc: dict[str, Any], source: str,
           where: str) -> tuple[Scenario | None, list[str]]:
    """Validate one synthetic case as a scenario; its problems re-labelled to the campaign key ``where``."""
    try:
        result = parse_document(_case_document(campaign, case, base_doc), source)
    except ScenarioInvalid as exc:
        return None, [f"{source}: {where}: {line.removeprefix(f'{source}: ')} (topology {case.topology})"
                      for line in exc.problems]
    assert isinstance(result, Scenario)
    return result, []


def _problems(campaign: Campaign, source: str, base_doc: dict[str, Any]) -> list[str]:
    """Checks across the campaign and its base, each stage only when the one before passed: fault ids and
    topology names; every topology with the base; the window against the base's load; every fault at both
    ends of its ranges on every topology in the latest window."""
    spec = campaign.spec
    out = [f"{source}: spec.faults.{fid}: unknown fault id {fid!r}{did_you_mean(fid, list(FAULTS))}"
           for fid in spec.faults if fid not in FAULTS]
    names = [t.label for t in spec.topologies]
    out += [f"{source}: spec.topologies[{i}]: variant name {n!r} repeats" for i, n in enumerate(names)
            if n in names[:i]]
    for i, t in enumerate(spec.topologies):
        world = t.data_parallel * t.pipeline_parallel * t.tensor_parallel
        if t.nodes > world:
            out.append(f"{source}: spec.topologies[{i}]: {t.nodes} nodes for {world} ranks "
                       f"(every node must hold a rank)")
    if out:
        return out

    onset, length = spec.onset.max, spec.duration.max
    scenario = None
    for i, t in enumerate(spec.topologies):
        scenario, problems = _probe(campaign, PlannedCase(0, "dev", (), onset, length, t.label), base_doc, source,
                                    f"spec.topologies[{i}]")
        out += problems
    if out or scenario is None:
        return out

    load = scenario.spec.workload
    if spec.onset.min < load.warmup:
        out.append(f"{source}: spec.onset.min: starts during the base's warm-up ({spec.onset.min:g}s < "
                   f"{load.warmup:g}s)")
    if onset + length > load.duration:
        out.append(f"{source}: spec.duration.max: the latest window ends at {onset + length:g}s "
                   f"(onset.max + duration.max), after the base's load ({load.duration:g}s)")
    if out:
        return out

    for t in spec.topologies:
        for fid, _ in spec.mix():
            s = SAMPLING[fid]
            for kind, u in ((kind, u) for kind in t.target_kinds(FAULTS[fid]) for u in (0.0, 1.0)):
                params = {k: r.value(u) for k, r in s.ranges.items()} | {k: v[0] for k, v in s.choices.items()}
                step = FaultDraw(fid, t.targets(kind)[-1], params, onset, length)
                _, problems = _probe(campaign, PlannedCase(0, "dev", (step,), onset, length, t.label), base_doc,
                                     source, f"spec.faults.{fid}")
                out += [p for p in problems if p not in out]
    return out


def parse_campaign(doc: dict[str, Any], source: str, campaign_path: str | Path) -> Campaign:
    campaign = validate_model(Campaign, doc, source)
    problems = _problems(campaign, source, _base_document(campaign, campaign_path))
    if problems:
        raise ScenarioInvalid(problems)
    return campaign


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign file (and its base): ScenarioInvalid with one line per problem."""
    path = Path(path)
    doc = _read_yaml(path)
    if doc.get("kind") != "Campaign":
        raise ScenarioInvalid([f"{path}: kind: expected a Campaign, got {doc.get('kind')!r}"])
    return parse_campaign(doc, str(path), path)


def peek_kind(path: str | Path) -> str | None:
    try:
        return _read_yaml(Path(path)).get("kind")
    except ScenarioInvalid:
        return None


def load_any(path: str | Path) -> Scenario | Suite | Campaign:
    """A scenario, suite or campaign file, by its kind."""
    if peek_kind(path) == "Campaign":
        return load_campaign(path)
    return load_document(path)


# ----------------------------------------------------------------------------- dataset card


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputInvalid(f"{path}: file not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputInvalid(f"{path}: not readable JSON ({exc})") from None


def intensity_bin(value: float | None) -> str:
    if value is None:
        return "none"
    for lo, hi in INTENSITY_BINS:
        if value < hi or hi == 1.0:
            return f"{lo:.2f}-{hi:.2f}"
    return "none"


def _component(target: dict[str, Any] | None) -> str:
    return target_component(target) if target else "none"


def _chaosbench_version() -> str | None:
    try:
        return importlib.metadata.version("chaosbench")
    except importlib.metadata.PackageNotFoundError:
        return None


def _machine() -> dict[str, Any]:
    try:
        import psutil

        memory = psutil.virtual_memory().total
    except Exception:  # noqa: BLE001 - the card still says what it knows
        memory = None
    return {"cpus": os.cpu_count(), "memory_bytes": memory, "kernel": platform.release(),
            "platform": platform.platform(), "python": platform.python_version()}


def dataset_card(run_dir: Path) -> dict[str, Any]:
    """The card's content: counts per fault, target, intensity bin, split and status, realism, provenance."""
    from chaosbench.collect.manifest import git_sha

    run_dir = Path(run_dir)
    run = _read_json(run_dir / "run.json")
    planned = _read_json(run_dir / "plan.json")
    labels = read_labels_file(run_dir / "labels.jsonl")

    def counts(values) -> dict[str, int]:
        return dict(sorted(Counter(values).items()))

    per_fault, per_target, realism = Counter(), Counter(), Counter()
    per_fault_split: dict[str, Counter] = {}
    for row in labels:
        faults = row.get("faults") or []
        ids = [f.get("id") for f in faults] or ["clean"]
        for fid, f in zip(ids, faults or [{}]):
            per_fault[fid] += 1
            per_target[f"{fid}@{_component(f.get('target'))}" if faults else "clean"] += 1
            per_fault_split.setdefault(fid, Counter())[row.get("split", "?")] += 1
            realism[FAULTS[fid].local_realism if fid in FAULTS else "none"] += 1
    argv = run.get("argv") or []
    sha = run.get("chaosbench_git_sha") or git_sha()
    return {
        "schema": CARD_SCHEMA,
        "run": {k: run.get(k) for k in ("kind", "source", "seed", "started") if k in run},
        "cases": len(labels),
        "planned": len(planned) if isinstance(planned, list) else None,
        "compound": sum(1 for r in labels if len(r.get("faults") or []) > 1),
        "per_fault": dict(sorted(per_fault.items())),
        "per_fault_split": {k: dict(sorted(v.items())) for k, v in sorted(per_fault_split.items())},
        "per_target": dict(sorted(per_target.items())),
        "per_target_kind": counts(r.get("target_kind") or "none" for r in labels),
        "per_intensity": counts(intensity_bin(r.get("intensity")) for r in labels),
        "per_split": counts(r.get("split", "?") for r in labels),
        "per_topology": counts(str(r.get("topology", "?")) for r in labels),
        "status": counts(r.get("status", "?") for r in labels),
        "realism": dict(sorted(realism.items())),
        "realism_by_fault": {s.id: s.local_realism for s in CATALOG if s.id in per_fault},
        "command": shlex.join(str(a) for a in argv) if isinstance(argv, list) else str(argv),
        "chaosbench": {"version": run.get("chaosbench_version") or _chaosbench_version(), "git_sha": sha},
        "machine": run.get("machine") or _machine(),
    }


def _md_table(title: str, counts: dict[str, Any], head: str) -> list[str]:
    lines = [f"## {title}", "", f"| {head} | cases |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in counts.items()]
    return [*lines, ""]


def write_dataset_card(run_dir: Path) -> tuple[Path, Path]:
    """Write <run>/dataset_card.md and dataset_card.json from labels.jsonl, run.json and plan.json."""
    run_dir = Path(run_dir)
    card = dataset_card(run_dir)
    json_path, md_path = run_dir / "dataset_card.json", run_dir / "dataset_card.md"
    json_path.write_text(json.dumps(card, indent=2) + "\n")
    m = card["machine"]
    mem = f"{m['memory_bytes'] / 2**30:.1f} GiB" if m.get("memory_bytes") else "?"
    lines = [
        f"# Dataset card: {card['run'].get('source', run_dir.name)}",
        "",
        f"- cases: {card['cases']} (planned {card['planned']}), compound: {card['compound']}",
        f"- status: {', '.join(f'{k} {v}' for k, v in card['status'].items())}",
        (f"- splits: {', '.join(f'{k} {v}' for k, v in card['per_split'].items())} "
         "(dev for tuning; test is scored once per release)"),
        f"- generated by: `{card['command']}`",
        f"- chaosbench {card['chaosbench']['version']} at {card['chaosbench']['git_sha']}",
        f"- machine: {m.get('cpus')} CPUs, {mem}, kernel {m.get('kernel')}, python {m.get('python')}",
        "",
        "## Faults",
        "",
        ("Local mechanisms are `real` (the system is degraded for real) or `emulated` (the engine's device layer "
         "imitates a GPU effect a CPU cannot have)."),
        "",
        "| fault | cases | dev | test | local |",
        "|---|---:|---:|---:|---|",
    ]
    for fid, n in card["per_fault"].items():
        s = card["per_fault_split"].get(fid, {})
        lines.append(f"| {fid} | {n} | {s.get('dev', 0)} | {s.get('test', 0)} | "
                     f"{card['realism_by_fault'].get(fid, '-')} |")
    lines.append("")
    lines += _md_table("Targets", card["per_target"], "fault@target")
    lines += _md_table("Target kinds", card["per_target_kind"], "kind")
    lines += _md_table("Intensity (primary fault, 0 barely visible .. 1 severe)", card["per_intensity"], "bin")
    lines += _md_table("Topologies", card["per_topology"], "variant")
    lines += _md_table("Realism (fault draws)", card["realism"], "local mechanism")
    md_path.write_text("\n".join(lines))
    return md_path, json_path
