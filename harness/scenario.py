"""The scenario format: strict pydantic v2 models, the loader and its error report.

A scenario (``kind: Scenario``) describes one case: the deployment, the load, the
steady-state probes, the faults (ordered, each checked against its catalog
parameter model), stop conditions, telemetry, trace windows and evaluation. A
suite (``kind: Suite``) lists scenarios (paths or globs) with repetitions and
seeds. Unknown keys are errors everywhere. ``include:`` pulls shared defaults
from another file (deep-merged, the including file wins). Files whose name starts
with ``_`` are fragments for ``include`` and are not scenarios themselves.

Every problem is reported as ``file: path.in.document: reason``; the JSON
Schema (``chaosbench schema``) is generated from these models.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chaosbench.errors import ScenarioInvalid
from chaosbench.faults.catalog import fault_specs, get_fault
from chaosbench.faults.spec import FaultSpec, TargetKind
from chaosbench.layout import Layout, replica_name, stage_name
from chaosbench.registry import did_you_mean
from chaosbench.types import Duration, PositiveDuration, between

API_VERSION = "chaosbench/v1alpha1"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


# ----------------------------------------------------------------------------- sections


class Metadata(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=63, description="lowercase, digits and '-'")
    version: between(int, 1, 10_000, "bump when the scenario's meaning changes") = 1
    labels: dict[str, str] = Field(default_factory=dict)
    description: str = ""


class TopologySpec(Strict):
    """DP x PP x TP ranks on ``nodes``: global rank r = (d * PP + p) * TP + t for replica d, stage p, tp index t.

    Components (no '_' in names, RCAEval splits columns at '_'): ``node-<i>``, ``rank-<r>`` and, when there is
    more than one replica or stage, ``replica-<d>`` and (with stages) ``replica-<d>.stage-<p>``. Ranks sit on nodes
    in contiguous blocks (``rank_node``). ``pipeline_parallel`` is left out of a dump at its default, so a scenario
    of one stage resolves (and hashes) as before stages existed.
    """

    nodes: between(int, 1, 64, "emulated nodes (local) or GPU nodes (k8s)") = 2
    tensor_parallel: between(int, 1, 64, "ranks per pipeline stage (tensor-parallel group)") = 4
    data_parallel: between(int, 1, 16, "model replicas") = 1
    pipeline_parallel: between(int, 1, 64, "pipeline stages per replica") = Field(1, exclude_if=lambda v: v == 1)

    @model_validator(mode="after")
    def _ranks_fit(self) -> TopologySpec:
        if self.world_size > MAX_RANKS:
            raise ValueError(f"data_parallel x pipeline_parallel x tensor_parallel = {self.world_size} ranks "
                             f"(at most {MAX_RANKS})")
        return self

    @property
    def world_size(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel * self.data_parallel

    @property
    def grid(self) -> Layout:
        """Where each rank sits, and the component names (chaosbench.layout)."""
        return Layout(dp=self.data_parallel, pp=self.pipeline_parallel, tp=self.tensor_parallel, nodes=self.nodes)

    @property
    def single_group(self) -> bool:
        """One replica of one stage: the layout before replicas and stages (no replica or stage components)."""
        return self.grid.single_group

    def node_names(self) -> list[str]:
        return [f"node-{i}" for i in range(self.nodes)]

    def rank_names(self) -> list[str]:
        return [f"rank-{r}" for r in range(self.world_size)]

    def component_names(self) -> list[str]:
        """Every deployment component an operator sees (the engine's ``ingress`` aside)."""
        return [*self.node_names(), *self.grid.replica_names(), *self.grid.stage_names(), *self.rank_names()]

    def rank_node(self, rank: int) -> str:
        """Ranks are placed on nodes in contiguous blocks: 4 ranks on 2 nodes -> 0,1 on node-0; 2,3 on node-1."""
        return self.grid.rank_node(rank)

    def ranks_of(self, component: str) -> list[int]:
        return self.grid.ranks_of(component)

    def node_of(self, component: str) -> str | None:
        return self.grid.node_of(component)


MAX_RANKS = 4096

class ModelSpec(Strict):
    name: str = "mini-llama"
    layers: between(int, 1, 128, "decoder layers") = 2
    hidden: between(int, 16, 16384, "hidden size") = 256
    heads: between(int, 1, 256, "attention heads") = 4
    vocab: between(int, 64, 262144, "vocabulary size") = 2048
    max_seq_len: between(int, 32, 131072, "maximum sequence length") = 512
    path: str | None = Field(None, description="model path or id (vllm engine / k8s); mini uses random weights")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelSpec:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


class K8sSpec(Strict):
    namespace: str = "chaosbench"
    kubeconfig: str | None = None
    # Ray Serve LLM (ray.serve.llm:build_openai_app) with its matching vLLM; a plain vLLM image has no Ray Serve
    image: str = "rayproject/ray-llm:2.52.0-py311-cu128"
    gpu_product: str | None = Field(None, description="node selector: nvidia.com/gpu.product, e.g. NVIDIA-H100-80GB-HBM3")
    accelerator_type: str | None = Field(None, description="Ray's accelerator name for LLMConfig, e.g. H100")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)


class Deployment(Strict):
    backend: str = Field("local", description="a backend of chaosbench.backends (shipped: local, k8s) or a plugin's")
    engine: Literal["mini", "vllm"] = "mini"
    topology: TopologySpec = TopologySpec()
    model: ModelSpec = ModelSpec()
    k8s: K8sSpec = K8sSpec()

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        from chaosbench.backends import backends

        if name not in backends():
            raise ValueError(f"unknown backend {name!r}{did_you_mean(name, list(backends()))}; "
                             f"known: {', '.join(backends())}")
        return name

    @model_validator(mode="after")
    def _layout_fits_model(self) -> Deployment:
        if self.model.heads % self.topology.tensor_parallel:
            raise ValueError(
                f"model.heads ({self.model.heads}) must be divisible by topology.tensor_parallel "
                f"({self.topology.tensor_parallel})"
            )
        if self.model.layers % self.topology.pipeline_parallel:
            raise ValueError(
                f"model.layers ({self.model.layers}) must be divisible by topology.pipeline_parallel "
                f"({self.topology.pipeline_parallel}): every stage holds as many layers"
            )
        return self


class SLO(Strict):
    ttft: PositiveDuration = 2.0
    tpot: PositiveDuration = 0.2
    e2e: PositiveDuration = 20.0


class Workload(Strict):
    users: between(int, 1, 10_000, "concurrent Locust users") = 4
    spawn_rate: between(float, 0.1, 10_000, "users started per second") = 4.0
    arrival: Literal["constant", "poisson"] = "poisson"
    qps: between(float, 0, 100_000, "target request rate over all users (0: closed loop)") = 2.0
    prompt_tokens: between(int, 1, 131072, "prompt length, tokens") = 64
    output_tokens: between(int, 1, 131072, "generated tokens per request") = 32
    streaming: bool = True
    duration: PositiveDuration = 90.0
    warmup: Duration = 10.0
    seed: between(int, 0, 2**31 - 1, "seed for prompts and arrivals") = 1
    max_requests: between(int, 1, 10_000_000, "hard bound on requests sent") = 100_000
    slo: SLO = SLO()


class Tolerance(Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Tolerance:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Probe(Strict):
    name: str
    query: str = Field(min_length=1, description="PromQL; the probe holds when its value is within tolerance")
    tolerance: Tolerance


class Target(Strict):
    """One of: a node, a rank, a replica, or a stage (a replica and its stage). Which kinds a fault allows is its
    spec's ``target_kinds``. ``replica`` and ``stage`` are left out of a dump when not given, so a node or rank
    target resolves as before replicas and stages existed."""

    node: str | None = Field(None, pattern=r"^node-\d+$", description="node-<i> for node faults")
    rank: between(int, 0, MAX_RANKS - 1, "rank index for rank faults") | None = None
    replica: between(int, 0, 15, "data-parallel replica: all its ranks, or with stage one stage of it") | None = \
        Field(None, exclude_if=lambda v: v is None)
    stage: between(int, 0, 63, "pipeline stage of the replica: all its ranks") | None = \
        Field(None, exclude_if=lambda v: v is None)

    @model_validator(mode="after")
    def _exactly_one(self) -> Target:
        if self.stage is not None and self.replica is None:
            raise ValueError("a stage needs its replica: give target.replica and target.stage")
        if sum(v is not None for v in (self.node, self.rank, self.replica)) != 1:
            raise ValueError("give exactly one of node, rank or replica (with stage: one stage of the replica)")
        return self

    @property
    def kind(self) -> TargetKind:
        if self.node is not None:
            return "node"
        if self.rank is not None:
            return "rank"
        return "replica" if self.stage is None else "stage"

    @property
    def component(self) -> str:
        if self.node is not None:
            return self.node
        if self.rank is not None:
            return f"rank-{self.rank}"
        return replica_name(self.replica) if self.stage is None else stage_name(self.replica, self.stage)


class Verify(Strict):
    timeout: PositiveDuration = 20.0
    required: bool = Field(True, description="an unverified fault makes the case 'not-verified' (reported, not scored)")


class _FaultStepBase(Strict):
    target: Target
    start: Duration = Field(description="seconds after load start")
    duration: PositiveDuration
    verify: Verify = Verify()


def _fault_step_model(spec: FaultSpec) -> type[_FaultStepBase]:
    """One step model per fault id: ``id`` is the tag, ``params`` that fault's parameter model."""
    model = type(
        "FaultStep_" + spec.id.replace("-", "_"),
        (_FaultStepBase,),
        {
            "__annotations__": {"id": Literal[spec.id], "params": spec.params},  # type: ignore[valid-type]
            "params": Field(default_factory=spec.params, description=spec.description),
            "__module__": __name__,
        },
    )
    model.model_config["title"] = f"fault {spec.id}"
    return model


_STEP_MODELS = tuple(_fault_step_model(spec) for spec in fault_specs())  # shipped and plugin faults
FaultStep = Annotated[Union[_STEP_MODELS], Field(discriminator="id")]  # type: ignore[valid-type]
_FAULT_IDS = tuple(spec.id for spec in fault_specs())


class StopCondition(Strict):
    name: str
    query: str = Field(min_length=1, description="PromQL; the fault is aborted when it returns a non-zero value")
    for_: Duration = Field(0.0, alias="for", description="how long the condition must hold")


class ExtraMetric(Strict):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9:]*$", description="column metric name (no '_' needed)")
    component: str = Field(pattern=r"^[a-z0-9-]+$", description="component the column belongs to (no '_')")
    query: str = Field(min_length=1)


class Telemetry(Strict):
    step: PositiveDuration = 1.0
    extra_metrics: list[ExtraMetric] = Field(default_factory=list)


class TraceWindow(Strict):
    start: Duration = Field(description="seconds after load start")
    duration: PositiveDuration


class Traces(Strict):
    enabled: bool = True
    ranks: Literal["all"] | list[int] = "all"
    windows: list[TraceWindow] = Field(
        default_factory=list,
        description="empty: a baseline window before the first fault (or the nominal injection) and the fault window",
    )
    baseline: PositiveDuration = Field(15.0, description="length of the automatic pre-fault window")


class Evaluation(Strict):
    detectors: list[str] = Field(default_factory=lambda: ["outpost", "analyzer", "baro", "nsigma", "random"])
    metrics: list[str] = Field(default_factory=lambda: ["ac@k", "avg@k", "detection"])
    k: between(int, 1, 20, "top-k for AC@k") = 5


class ScenarioSpec(Strict):
    deployment: Deployment = Deployment()
    workload: Workload = Workload()
    steady_state: list[Probe] = Field(default_factory=list)
    faults: list[FaultStep] = Field(default_factory=list)  # type: ignore[valid-type]
    stop_conditions: list[StopCondition] = Field(default_factory=list)
    telemetry: Telemetry = Telemetry()
    traces: Traces = Traces()
    evaluation: Evaluation = Evaluation()
    nominal_inject: Duration = Field(
        40.0,
        description="seconds after load start written as inject_time when there is no fault (clean runs), "
        "so clean and faulty cases look alike to a detector",
    )
    nominal_duration: Duration | None = Field(
        None,
        description="clean runs: the nominal fault window's length (trace window and labels), drawn like a fault's "
        "duration so clean and faulty cases have identical windows; empty: traces.baseline",
    )


class Scenario(Strict):
    api_version: Literal["chaosbench/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Scenario"]
    metadata: Metadata
    spec: ScenarioSpec = ScenarioSpec()

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def problems(self) -> list[tuple[str, str]]:
        """Checks across sections (targets against topology and catalog, timing against the load):
        (path, reason) pairs, empty when the scenario is consistent."""
        spec = self.spec
        topo, load = spec.deployment.topology, spec.workload
        out: list[tuple[str, str]] = []
        for i, step in enumerate(spec.faults):
            where = f"spec.faults[{i}]"
            out.extend((f"{where}.{key}", msg) for key, msg in target_problems(step.id, step.target, topo))
            if step.start < load.warmup:
                out.append((f"{where}.start", f"starts during the warm-up ({step.start:g}s < {load.warmup:g}s)"))
            if step.start + step.duration > load.duration:
                end = step.start + step.duration
                out.append((where, f"ends after the load ({end:g}s > workload.duration {load.duration:g}s)"))
        dep = spec.deployment
        if dep.engine == "vllm":
            from chaosbench.engines.vllm import unsupported_faults

            refused = unsupported_faults(dep.engine, dep.backend)
            out.extend((f"spec.faults[{i}].id", refused[s.id]) for i, s in enumerate(spec.faults) if s.id in refused)
        if not spec.faults and not load.warmup <= spec.nominal_inject < load.duration:
            out.append(("spec.nominal_inject", "must lie after the warm-up and before the end of the load"))
        for i, w in enumerate(spec.traces.windows):
            if w.start + w.duration > load.duration:
                out.append((f"spec.traces.windows[{i}]", "ends after the load"))
        return out


def target_problems(fault_id: str, target: Target, topo: TopologySpec) -> list[tuple[str, str]]:
    """A step's target against its fault's allowed kinds and the topology: (key under the step, reason) pairs."""
    kinds, kind = get_fault(fault_id).target_kinds, target.kind
    if kind not in kinds:
        return [("target", f"{fault_id} targets {' or '.join(f'a {k}' for k in kinds)}, not a {kind}")]
    if target.rank is not None and target.rank >= topo.world_size:
        return [("target.rank", f"no rank {target.rank} (world size {topo.world_size})")]
    if target.node is not None and target.node not in topo.node_names():
        return [("target.node", f"no {target.node} ({', '.join(topo.node_names())})")]
    if kind in ("replica", "stage") and topo.single_group:
        why = "one replica of one stage has no replica or stage components (target a rank or a node)"
        return [("target", f"{target.component}: {why}")]
    if target.replica is not None and target.replica >= topo.data_parallel:
        return [("target.replica", f"no replica {target.replica} (data_parallel {topo.data_parallel})")]
    if target.stage is not None and target.stage >= topo.pipeline_parallel:
        return [("target.stage", f"no stage {target.stage} (pipeline_parallel {topo.pipeline_parallel})")]
    if kind == "stage" and topo.pipeline_parallel == 1:
        whole = replica_name(target.replica)
        return [("target", f"{target.component}: a replica of one stage is the replica: target {whole}")]
    return []


class SuiteSpec(Strict):
    scenarios: list[str] = Field(min_length=1, description="scenario files or globs, relative to the suite file")
    repetitions: between(int, 1, 1000, "runs per scenario") = 1
    seeds: list[int] = Field(default_factory=list, description="one seed per repetition; default: 1, 2, ...")
    overrides: dict[str, Any] = Field(default_factory=dict, description="deep-merged into every scenario's spec")
    detectors: list[str] = Field(default_factory=list, description="extra detectors, built-in names or module:function")

    @model_validator(mode="after")
    def _seeds_match(self) -> SuiteSpec:
        if self.seeds and len(self.seeds) != self.repetitions:
            raise ValueError(f"seeds has {len(self.seeds)} entries for {self.repetitions} repetitions")
        return self

    def seed_list(self) -> list[int]:
        return self.seeds or list(range(1, self.repetitions + 1))


class Suite(Strict):
    api_version: Literal["chaosbench/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Suite"]
    metadata: Metadata
    spec: SuiteSpec


# ----------------------------------------------------------------------------- loading


def _format_error(err: dict[str, Any]) -> tuple[str, str]:
    loc = list(err["loc"])
    # drop the union tag pydantic adds after faults[i]: faults, 0, '<fault id>', params -> faults[0].params
    for i in range(len(loc) - 2):
        if loc[i] == "faults" and isinstance(loc[i + 1], int) and loc[i + 2] in _FAULT_IDS:
            del loc[i + 2]
            break
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "union_tag_invalid":
        bad = err.get("input", {}).get("id") if isinstance(err.get("input"), dict) else None
        msg = f"unknown fault id {bad!r}{did_you_mean(str(bad), list(_FAULT_IDS))}; see `chaosbench faults`"
        path = f"{path}.id"
    elif kind == "union_tag_not_found":
        msg = "missing fault id"
        path = f"{path}.id"
    elif kind == "missing":
        msg = "required"
    elif kind == "string_pattern_mismatch":
        msg = f"must match {err.get('ctx', {}).get('pattern', 'the pattern')}"
    elif kind == "literal_error" and loc and loc[-1] == "apiVersion":
        msg = f"must be {API_VERSION!r}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    elif msg.startswith("Input should be"):
        msg = "must be" + msg[len("Input should be") :]
    return path, msg


ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_model(model: type[ModelT], doc: dict[str, Any], source: str) -> ModelT:
    """``model.model_validate(doc)``, or ScenarioInvalid with one ``source: where: reason`` line per error."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where, msg = _format_error(err)
            lines.append(f"{source}: {where}: {msg}" if where else f"{source}: {msg}")
        raise ScenarioInvalid(lines) from None


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one YAML document as a mapping, resolving ``include:`` (relative to the file)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ScenarioInvalid([f"{path}: file not found"]) from None
    except IsADirectoryError:
        raise ScenarioInvalid([f"{path}: is a directory"]) from None
    except OSError as exc:
        raise ScenarioInvalid([f"{path}: cannot read ({exc.strerror})"]) from None
    try:
        text = raw.decode("utf-8")
        if "\x00" in text:
            raise UnicodeDecodeError("utf-8", raw, 0, 1, "NUL byte")
    except UnicodeDecodeError:
        raise ScenarioInvalid([f"{path}: not a text file (binary content)"]) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioInvalid([f"{path}: YAML syntax error: {where}{problem}"]) from None
    if doc is None:
        raise ScenarioInvalid([f"{path}: empty file"])
    if not isinstance(doc, dict):
        raise ScenarioInvalid([f"{path}: top level must be a mapping, got {type(doc).__name__}"])
    include = doc.pop("include", None)
    if include is None:
        return doc
    if not isinstance(include, str):
        raise ScenarioInvalid([f"{path}: include: must be a file path"])
    base_path = (path.parent / include).resolve()
    if base_path in chain:
        raise ScenarioInvalid([f"{path}: include: cycle through {base_path}"])
    return deep_merge(_read_yaml(base_path, (*chain, path.resolve())), doc)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_document(doc: dict[str, Any], source: str) -> Scenario | Suite:
    kind = doc.get("kind")
    model: type[Scenario] | type[Suite]
    if kind == "Scenario":
        model = Scenario
    elif kind == "Suite":
        model = Suite
    else:
        raise ScenarioInvalid([f"{source}: kind: must be 'Scenario' or 'Suite', got {kind!r}"])
    result = validate_model(model, doc, source)
    if isinstance(result, Scenario) and (problems := result.problems()):
        raise ScenarioInvalid([f"{source}: {where}: {msg}" for where, msg in problems])
    return result


def load_document(path: str | Path) -> Scenario | Suite:
    path = Path(path)
    return parse_document(_read_yaml(path), str(path))


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    path = Path(path)
    doc = _read_yaml(path)
    if overrides:
        doc = deep_merge(doc, {"spec": overrides})
    result = parse_document(doc, str(path))
    if not isinstance(result, Scenario):
        raise ScenarioInvalid([f"{path}: kind: expected a Scenario, got a Suite"])
    return result


def load_suite(path: str | Path) -> Suite:
    result = load_document(path)
    if not isinstance(result, Suite):
        raise ScenarioInvalid([f"{path}: kind: expected a Suite, got a Scenario"])
    return result


def suite_scenario_paths(suite: Suite, suite_path: Path) -> list[Path]:
    """Expand the suite's entries (paths or globs, relative to the suite file), in order, without repeats."""
    base = Path(suite_path).parent
    out: list[Path] = []
    problems = []
    for i, entry in enumerate(suite.spec.scenarios):
        pattern = str(base / entry)
        matches = sorted(Path(p) for p in glob.glob(pattern)) if glob.has_magic(entry) else [Path(pattern)]
        matches = [m for m in matches if not m.name.startswith("_") and m.resolve() != Path(suite_path).resolve()]
        if glob.has_magic(entry):  # a glob picks scenarios only, not other suites beside them
            matches = [m for m in matches if _peek_kind(m) == "Scenario"]
        if not matches or not all(m.is_file() for m in matches):
            problems.append(f"{suite_path}: spec.scenarios[{i}]: no scenario file matches {entry!r}")
        for m in matches:
            if m.resolve() not in {o.resolve() for o in out}:
                out.append(m)
    if problems:
        raise ScenarioInvalid(problems)
    return out


def _peek_kind(path: Path) -> str | None:
    try:
        return _read_yaml(path).get("kind")
    except ScenarioInvalid:
        return "Scenario"  # let the real load report the problem


def expand_suite(suite: Suite, suite_path: Path) -> list[tuple[Scenario, int, int]]:
    """(scenario, repetition, seed) for every run of the suite, validated with the suite's overrides."""
    runs = []
    problems: list[str] = []
    for path in suite_scenario_paths(suite, suite_path):
        try:
            scenario = load_scenario(path, suite.spec.overrides)
        except ScenarioInvalid as exc:
            problems.extend(exc.problems)
            continue
        for rep, seed in enumerate(suite.spec.seed_list()):
            runs.append((scenario, rep, seed))
    if problems:
        raise ScenarioInvalid(problems)
    return runs


def scenario_files(paths: list[Path]) -> list[Path]:
    """Files named by ``paths``; directories expand to their *.yaml/*.yml (recursively), fragments (_*) skipped."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(
                f for f in sorted(p.rglob("*")) if f.suffix in {".yaml", ".yml"} and not f.name.startswith("_")
            )
        else:
            out.append(p)
    return out


def json_schema() -> dict[str, Any]:
    """JSON Schema of scenario and suite files (for editors), generated from the models."""
    from pydantic.json_schema import models_json_schema

    _, defs = models_json_schema([(Scenario, "validation"), (Suite, "validation")], by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "chaosbench scenario or suite",
        "oneOf": [{"$ref": "#/$defs/Scenario"}, {"$ref": "#/$defs/Suite"}],
        **defs,
    }
