"""How the k8s backend injects, verifies and recovers each fault step: the step's ``FaultAction``.

Each fault module says what its cluster action is (``cluster(step, kit) -> ClusterParts``); this module gives it
the ``ClusterKit`` to build it from and assembles the plan. Two mechanisms, as FAULTS.md assigns them:
- Chaos Mesh objects (StressChaos, NetworkChaos) for CPU, memory and network faults:
  inject = create the object, verify = its ``AllInjected`` condition, recover = delete it.
- The privileged fault agent (DaemonSet, one pod per GPU node) for GPU/NCCL faults and
  the CPU clamp: inject/verify/recover = ``fault_agent.py <verb> <mechanism> --gpu N ...``
  run in the agent pod of the target node through the Kubernetes exec API.

Each action also carries a PromQL query whose value shows the effect in telemetry,
recorded as evidence next to the mechanism's own verify result; its placeholders
(``{k8s_node}``, ``{worker_pods}``, ``{gpu_uuid}``) are filled in from what the cluster
reports (collect.resolve_query). A rank fault names its GPU by the NVML UUID that the
fault agents' ``locate`` reported for the rank (placement.py); rendered without a
cluster (dry run) it carries a ``{gpu_uuid:rank-N}`` placeholder instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from chaosbench.backends.k8s.collect import CADVISOR_INTERVAL_S, rate_window, ray_metric_name
from chaosbench.backends.k8s.placement import Placement, expected
from chaosbench.backends.k8s.settings import NODE_LABEL, K8sSettings
from chaosbench.errors import InputInvalid
from chaosbench.faults.catalog import fault_module
from chaosbench.faults.targets import rank_steps

if TYPE_CHECKING:
    from chaosbench.scenario import Scenario

AGENT = ("python3", "/opt/agent/fault_agent.py")
CHAOS_API = "chaos-mesh.org/v1alpha1"


@dataclass(frozen=True)
class AgentCommand:
    node: str  # chaosbench node whose agent pod runs it
    argv: tuple[str, ...]


@dataclass(frozen=True)
class FaultAction:
    step: int  # index in scenario.spec.faults
    fault_id: str
    component: str  # node-<i> or rank-<i>, as in telemetry
    node: str
    gpu: str | None  # the rank's GPU (NVML UUID) for rank faults
    start_s: float
    duration_s: float
    chaos_objects: tuple[dict[str, Any], ...] = ()
    agent_inject: tuple[AgentCommand, ...] = ()
    agent_verify: tuple[AgentCommand, ...] = ()
    agent_recover: tuple[AgentCommand, ...] = ()
    evidence_query: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def mechanisms(self) -> tuple[str, ...]:
        out = []
        if self.chaos_objects:
            out.append("chaos-mesh")
        if self.agent_inject:
            out.append("fault-agent")
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        def cmds(items: tuple[AgentCommand, ...]) -> list[dict[str, Any]]:
            return [{"node": c.node, "argv": list(c.argv)} for c in items]

        return {
            "step": self.step, "fault_id": self.fault_id, "component": self.component, "node": self.node,
            "gpu": self.gpu, "start_s": self.start_s, "duration_s": self.duration_s,
            "mechanisms": list(self.mechanisms),
            "chaos_objects": [f"{o['kind']}/{o['metadata']['name']}" for o in self.chaos_objects],
            "agent_inject": cmds(self.agent_inject), "agent_verify": cmds(self.agent_verify),
            "agent_recover": cmds(self.agent_recover), "evidence_query": self.evidence_query,
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------- what fault modules build from


class ClusterParts(TypedDict, total=False):
    """A fault's cluster action: the FaultAction fields its ``cluster(step, kit)`` fills in."""

    chaos_objects: tuple[dict[str, Any], ...]
    agent_inject: tuple[AgentCommand, ...]
    agent_verify: tuple[AgentCommand, ...]
    agent_recover: tuple[AgentCommand, ...]
    evidence_query: str
    notes: tuple[str, ...]


@dataclass(frozen=True)
class ClusterKit:
    """What a fault module's ``cluster(step, kit) -> ClusterParts`` builds its Chaos Mesh objects, fault-agent
    commands and evidence query from: the run's settings, the target's node, the rank's GPU (rank faults) and the
    name of the step's Chaos Mesh object (node faults)."""

    settings: K8sSettings
    node: str
    gpu: str | None  # NVML UUID (or the dry run's placeholder) of the target rank's GPU; None for node faults
    name: str  # Chaos Mesh object name for this step (<= 44 chars: a DNS label)

    def agent(self, mechanism: str, *extra: str, gpu: str | None = None) -> ClusterParts:
        """inject/verify/recover commands of one fault-agent mechanism (fault_agent.py MECHANISMS) on the
        target's node; ``gpu`` defaults to the target rank's GPU (``worker[:k]``: the run's k-th GPU there)."""
        where = gpu or self.gpu
        if where is None:
            raise InputInvalid(f"fault-agent {mechanism} on {self.node}: a node fault must name its GPU (worker)")

        def cmd(verb: str, *args: str) -> tuple[AgentCommand, ...]:
            return (AgentCommand(self.node, (*AGENT, verb, mechanism, "--gpu", where, "--run", self.settings.name,
                                             *args)),)

        return {"agent_inject": cmd("inject", *extra), "agent_verify": cmd("verify"), "agent_recover": cmd("recover")}

    def chaos(self, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": CHAOS_API,
            "kind": kind,
            "metadata": {"name": self.name, "namespace": self.settings.namespace,
                         "labels": {"app.kubernetes.io/part-of": "chaosbench"}},
            "spec": spec,
        }

    def on_node(self, duration_s: float) -> dict[str, Any]:
        """Chaos Mesh target and duration: every Ray worker pod of the target node."""
        selector = {"namespaces": [self.settings.namespace], "labelSelectors": {NODE_LABEL: self.node}}
        return {"mode": "all", "selector": selector, "duration": f"{max(1, round(duration_s))}s"}

    def peers(self, role: str | None = None) -> dict[str, Any]:
        """NetworkChaos target: the run's other pods (head included: it has no node label), or other ``role`` pods.

        Chaos Mesh only shapes ``from``/``both`` directions against an explicit target.
        """
        labels = {"app.kubernetes.io/part-of": "chaosbench"}
        if role:
            labels["chaosbench.io/role"] = role
        selector = {"namespaces": [self.settings.namespace], "labelSelectors": labels,
                    "expressionSelectors": [{"key": NODE_LABEL, "operator": "NotIn", "values": [self.node]}]}
        return {"mode": "all", "selector": selector}

    @staticmethod
    def dcgm(metric: str) -> str:
        """A dcgm-exporter series of the target GPU ({gpu_uuid} is filled in by collect.resolve_query)."""
        return f'{metric}{{UUID="{{gpu_uuid}}"}}'

    @property
    def pods(self) -> str:
        """PromQL label matchers of the target node's worker pods ({worker_pods} is filled in at collect)."""
        return f'namespace="{self.settings.namespace}",pod=~"{{worker_pods}}"'

    def rate_window(self, cadvisor: bool = False) -> str:
        """rate() window for the run's scrape step, or for cAdvisor's container series."""
        return rate_window(self.settings, CADVISOR_INTERVAL_S) if cadvisor else rate_window(self.settings)

    @staticmethod
    def ray_metric(name: str) -> str:
        """An engine metric as Ray's metrics agent exports it."""
        return ray_metric_name(name)


def locate_command(s: K8sSettings) -> tuple[str, ...]:
    """The agent command that reports this run's vLLM workers and their GPUs on one node (placement.py):
    processes whose environment has ``RUN_ENV=<rayservice>`` (set in every Ray pod of the run)."""
    return (*AGENT, "locate", "--run", s.name)


def plan_faults(s: K8sSettings, scenario: Scenario, placement: Placement | None = None) -> list[FaultAction]:
    """One FaultAction per step of ``scenario.spec.faults``; rank faults on the GPUs of ``placement``
    (what the cluster reported; None: the dry run's expected placement with GPU placeholders)."""
    placement = placement or expected(s)
    topo = scenario.spec.deployment.topology
    actions = []
    for i, step in enumerate(scenario.spec.faults):
        fault, name, component = fault_module(step.id), f"{s.name}-f{i}", step.target.component
        if step.target.node is not None:
            node, gpu = step.target.node, None
            parts = fault.cluster(step, ClusterKit(s, node, gpu, name))
        else:  # a rank, or every rank of a replica or a stage: one GPU each, on its node
            ranks = topo.ranks_of(component)
            node, gpu = placement.node(ranks[0]), placement.gpu(ranks[0])
            parts = _merged([fault.cluster(sub, ClusterKit(s, placement.node(r), placement.gpu(r), name))
                             for r, sub in zip(ranks, rank_steps(step, ranks))])
        actions.append(FaultAction(step=i, fault_id=step.id, component=component, node=node, gpu=gpu,
                                   start_s=step.start, duration_s=step.duration, **parts))
    return actions


def _merged(per_rank: list[ClusterParts]) -> ClusterParts:
    """One action from the per-rank actions of a replica or a stage: every rank's agent commands, the first
    rank's evidence query (its GPU is the action's), each note once."""
    if len(per_rank) == 1:
        return per_rank[0]
    out: ClusterParts = {**per_rank[0]}
    for key in ("chaos_objects", "agent_inject", "agent_verify", "agent_recover"):
        if any(key in p for p in per_rank):
            out[key] = tuple(item for p in per_rank for item in p.get(key, ()))  # type: ignore[literal-required]
    notes = [n for p in per_rank for n in p.get("notes", ())]
    if notes:
        out["notes"] = tuple(dict.fromkeys(notes))
    return out
