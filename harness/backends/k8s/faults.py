"""Per fault id: how the k8s backend injects, verifies and recovers it.

Two mechanisms, as FAULTS.md assigns them:
- Chaos Mesh objects (StressChaos, NetworkChaos) for CPU, memory and network faults:
  inject = create the object, verify = its ``AllInjected`` condition, recover = delete it.
- The privileged fault agent (DaemonSet, one pod per GPU node) for GPU/NCCL faults and
  the CPU clamp: inject/verify/recover = ``fault_agent.py <verb> <fault> --gpu N ...``
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
from typing import Any, Literal

from harness.backends.k8s.collect import CADVISOR_INTERVAL_S, rate_window, ray_metric_name
from harness.backends.k8s.placement import Placement, expected
from harness.backends.k8s.settings import NODE_LABEL, K8sSettings
from harness.errors import InputInvalid
from harness.faults.catalog import FAULTS

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


# ----------------------------------------------------------------------------- helpers


def _agent(s: K8sSettings, node: str, verb: str, fault: str, gpu: str, *extra: str) -> AgentCommand:
    return AgentCommand(node, (*AGENT, verb, fault, "--gpu", gpu, "--run", s.name, *extra))


def _agent_triplet(s: K8sSettings, node: str, fault: str, gpu: str, *extra: str) -> dict[str, tuple[AgentCommand, ...]]:
    return {
        "agent_inject": (_agent(s, node, "inject", fault, gpu, *extra),),
        "agent_verify": (_agent(s, node, "verify", fault, gpu),),
        "agent_recover": (_agent(s, node, "recover", fault, gpu),),
    }


def locate_command(s: K8sSettings) -> tuple[str, ...]:
    """The agent command that reports this run's vLLM workers and their GPUs on one node (placement.py):
    processes whose environment has ``RUN_ENV=<rayservice>`` (set in every Ray pod of the run)."""
    return (*AGENT, "locate", "--run", s.name)


def _selector(s: K8sSettings, node: str) -> dict[str, Any]:
    """The Ray worker pod(s) of one chaosbench node."""
    return {"namespaces": [s.namespace], "labelSelectors": {NODE_LABEL: node}}


def _peers(s: K8sSettings, node: str, role: str | None = None) -> dict[str, Any]:
    """NetworkChaos target: the run's other pods (head included: it has no node label), or other ``role`` pods.

    Chaos Mesh only shapes ``from``/``both`` directions against an explicit target.
    """
    labels = {"app.kubernetes.io/part-of": "chaosbench"}
    if role:
        labels["chaosbench.io/role"] = role
    selector = {"namespaces": [s.namespace], "labelSelectors": labels,
                "expressionSelectors": [{"key": NODE_LABEL, "operator": "NotIn", "values": [node]}]}
    return {"mode": "all", "selector": selector}


def _chaos(s: K8sSettings, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": CHAOS_API,
        "kind": kind,
        "metadata": {"name": name, "namespace": s.namespace, "labels": {"app.kubernetes.io/part-of": "chaosbench"}},
        "spec": spec,
    }


def _dur(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def _dcgm(metric: str) -> str:
    return f'{metric}{{UUID="{{gpu_uuid}}"}}'


def _pods(s: K8sSettings) -> str:
    return f'namespace="{s.namespace}",pod=~"{{worker_pods}}"'


# ----------------------------------------------------------------------------- per fault


def _gpu_fault(s: K8sSettings, step, node: str, gpu: str) -> dict[str, Any]:
    p, fid = step.params, step.id
    if fid == "gpu-power-cap":
        return {**_agent_triplet(s, node, fid, gpu, "--watts", str(p.watts)),
                "evidence_query": _dcgm("DCGM_FI_DEV_POWER_MGMT_LIMIT"),
                "notes": ("the cap is clamped to the board's power.min_limit..power.max_limit (nvidia-smi) and "
                          "refused when that leaves it at or above the current limit; recovery restores the "
                          "board's default limit read at inject time (params.default_watts is the local "
                          "emulation's value)",)}
    if fid == "gpu-clock-lock":
        return {**_agent_triplet(s, node, fid, gpu, "--mhz", str(p.sm_clock_mhz)),
                "evidence_query": _dcgm("DCGM_FI_DEV_SM_CLOCK")}
    if fid == "gpu-compute-contention":
        extra = ("--workers", str(p.workers), "--size", str(p.matrix_size), "--duration", str(step.duration))
        return {**_agent_triplet(s, node, fid, gpu, *extra), "evidence_query": _dcgm("DCGM_FI_PROF_GR_ENGINE_ACTIVE")}
    if fid == "gpu-memory-pressure":
        extra = ("--fraction", str(p.fraction), "--mode", p.mode, "--duration", str(step.duration))
        return {**_agent_triplet(s, node, fid, gpu, *extra), "evidence_query": _dcgm("DCGM_FI_DEV_FB_USED"),
                "notes": (f"the hog takes params.fraction of the memory free at inject time (the engine runs with "
                          f"gpu_memory_utilization={s.gpu_memory_utilization:g} and has preallocated its KV cache, "
                          "so the pressure shows as allocation failures and slow allocations, not fewer KV blocks)",)}
    if fid == "gpu-xid-error":
        extra = ("--xid", str(p.xid), "--kill-worker")
        notes = ("emulated on a cluster: an 'NVRM: Xid' line written to /dev/kmsg (DCGM's XID counter comes from "
                 "NVML driver events and stays 0) plus SIGKILL of the GPU's vLLM worker, restarted by Ray Serve"
                 + ("" if p.restart else " (params.restart=false is not honoured on k8s)"),)
        running = ray_metric_name("vllm:num_requests_running")
        return {**_agent_triplet(s, node, fid, gpu, *extra), "evidence_query": f"sum({running})", "notes": notes}
    if fid == "nccl-hang":
        return {**_agent_triplet(s, node, fid, gpu),
                "evidence_query": f'sum({ray_metric_name("vllm:num_requests_running")})',
                "notes": ("SIGSTOP of the vLLM worker on the GPU; SIGCONT on recovery",)}
    raise InputInvalid(f"{fid}: not a rank fault")


def _node_fault(s: K8sSettings, step, node: str, name: str) -> dict[str, Any]:
    p, fid = step.params, step.id
    base = {"mode": "all", "selector": _selector(s, node), "duration": _dur(step.duration)}
    pods, w = _pods(s), rate_window(s, CADVISOR_INTERVAL_S)
    if fid == "cpu-contention":
        obj = _chaos(s, "StressChaos", name, {**base, "stressors": {"cpu": {"workers": p.workers, "load": p.load}}})
        return {"chaos_objects": (obj,),
                "evidence_query": f'sum(rate(container_cpu_usage_seconds_total{{{pods}}}[{w}]))'}
    if fid == "host-memory-pressure":
        mem = {"workers": p.workers, "size": f"{p.memory_mb}MB"}
        obj = _chaos(s, "StressChaos", name, {**base, "stressors": {"memory": mem}})
        notes = () if p.limit_mb is None else ("params.limit_mb is not applied on k8s: the pod's memory limit holds",)
        return {"chaos_objects": (obj,), "notes": notes,
                "evidence_query": f'sum(container_memory_working_set_bytes{{{pods}}})'}
    if fid == "network-delay":
        delay = {"latency": f"{p.delay_ms:g}ms", "jitter": f"{p.jitter_ms:g}ms",
                 "correlation": f"{p.correlation * 100:g}"}
        spec: dict[str, Any] = {**base, "direction": "both", "target": _peers(s, node)}
        if p.loss_percent > 0:
            spec.update(action="netem", delay=delay, loss={"loss": f"{p.loss_percent:g}", "correlation": "0"})
        else:
            spec.update(action="delay", delay=delay)
        return {"chaos_objects": (_chaos(s, "NetworkChaos", name, spec),),
                "evidence_query": f'histogram_quantile(0.5, sum by (le) (rate('
                                  f'{ray_metric_name("vllm:e2e_request_latency_seconds_bucket")}[{rate_window(s)}])))'}
    if fid == "interconnect-degradation":
        return _interconnect(s, step, node, name, base, pods, w)
    if fid == "cpu-throttle":
        extra = ("--cpu-percent", str(p.cpu_percent), "--period-us", str(p.period_us))
        return {**_agent_triplet(s, node, fid, "worker", *extra),
                "evidence_query": f'sum(rate(container_cpu_cfs_throttled_periods_total{{{pods}}}[{w}]))',
                "notes": ("CFS quota on the Ray worker container's cgroup (as the local backend); a DVFS clamp "
                          "(cpupower) would need host cpufreq access and is not used",)}
    raise InputInvalid(f"{fid}: not a node fault")


def _interconnect(s: K8sSettings, step, node: str, name: str, base: dict, pods: str, w: str) -> dict[str, Any]:
    p = step.params
    direction = {"egress": "to", "ingress": "from", "both": "both"}[p.direction]
    bandwidth = {"rate": f"{max(1, round(p.rate_mbit * 125))}kbps", "limit": 20971520, "buffer": p.burst_kb * 1024}
    obj = _chaos(s, "NetworkChaos", name, {**base, "action": "bandwidth", "direction": direction,
                                           "target": _peers(s, node, role="worker"), "bandwidth": bandwidth})
    out: dict[str, Any] = {
        "chaos_objects": (obj,),
        "evidence_query": f'sum(rate(container_network_transmit_bytes_total{{{pods}}}[{w}]))',
        "notes": ("tbf bandwidth limit between the node's Ray worker pod and the other workers: bites on "
                  "inter-node NCCL traffic over TCP sockets (NCCL_IB_DISABLE=1 is set); tc never touches RDMA",),
    }
    if s.gpus_per_node > 1:
        # Intra-node links too: a peer-copy hog saturates NVLink between two of the node's vLLM GPUs.
        cmds = _agent_triplet(s, node, "interconnect-degradation", "worker", "--peer", "worker:1", "--link",
                              "nvlink", "--duration", str(step.duration))
        out.update(cmds)
    return out


def plan_faults(s: K8sSettings, scenario, placement: Placement | None = None) -> list[FaultAction]:
    """One FaultAction per step of ``scenario.spec.faults``; rank faults on the GPUs of ``placement``
    (what the cluster reported; None: the dry run's expected placement with GPU placeholders)."""
    placement = placement or expected(s)
    actions = []
    for i, step in enumerate(scenario.spec.faults):
        spec = FAULTS[step.id]
        if spec.target == "rank":
            rank = step.target.rank
            node, gpu, component = placement.node(rank), placement.gpu(rank), f"rank-{rank}"
            parts = _gpu_fault(s, step, node, gpu)
        else:
            node, gpu, component = step.target.node, None, step.target.node
            parts = _node_fault(s, step, node, f"{s.name}-f{i}")  # <= 44 chars: a DNS label
        actions.append(FaultAction(step=i, fault_id=step.id, component=component, node=node, gpu=gpu,
                                   start_s=step.start, duration_s=step.duration, **parts))
    return actions
