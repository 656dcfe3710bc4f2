"""Per fault id: how the k8s backend injects, verifies and recovers it.

Two mechanisms, as FAULTS.md assigns them:
- Chaos Mesh objects (StressChaos, NetworkChaos) for CPU, memory and network faults:
  inject = create the object, verify = its ``AllInjected`` condition, recover = delete it.
- The privileged fault agent (DaemonSet, one pod per GPU node) for GPU/NCCL faults and
  the CPU clamp: inject/verify/recover = ``fault_agent.py <verb> <fault> --gpu N ...``
  run in the agent pod of the target node through the Kubernetes exec API.

Each action also carries a PromQL query whose value shows the effect in telemetry,
recorded as evidence next to the mechanism's own verify result. ``{k8s_node}`` in a
query is the Kubernetes node name, filled in when the cluster is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

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
    gpu: int | None  # local GPU index on the node (rank faults)
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


def _agent(node: str, verb: str, fault: str, gpu: int, *extra: str) -> AgentCommand:
    return AgentCommand(node, (*AGENT, verb, fault, "--gpu", str(gpu), *extra))


def _agent_triplet(node: str, fault: str, gpu: int, *extra: str) -> dict[str, tuple[AgentCommand, ...]]:
    return {
        "agent_inject": (_agent(node, "inject", fault, gpu, *extra),),
        "agent_verify": (_agent(node, "verify", fault, gpu),),
        "agent_recover": (_agent(node, "recover", fault, gpu),),
    }


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


def _dcgm(metric: str, gpu: int) -> str:
    return f'{metric}{{Hostname="{{k8s_node}}",gpu="{gpu}"}}'


# ----------------------------------------------------------------------------- per fault


def _gpu_fault(s: K8sSettings, step, node: str, gpu: int) -> dict[str, Any]:
    p, fid = step.params, step.id
    if fid == "gpu-power-cap":
        return {**_agent_triplet(node, fid, gpu, "--watts", str(p.watts)),
                "evidence_query": _dcgm("DCGM_FI_DEV_POWER_MGMT_LIMIT", gpu),
                "notes": ("recovery restores the board's default limit read at inject time (params.default_watts "
                          "is the local emulation's value)",)}
    if fid == "gpu-clock-lock":
        return {**_agent_triplet(node, fid, gpu, "--mhz", str(p.sm_clock_mhz)),
                "evidence_query": _dcgm("DCGM_FI_DEV_SM_CLOCK", gpu)}
    if fid == "gpu-compute-contention":
        extra = ("--workers", str(p.workers), "--size", str(p.matrix_size), "--duration", str(step.duration))
        return {**_agent_triplet(node, fid, gpu, *extra), "evidence_query": _dcgm("DCGM_FI_PROF_GR_ENGINE_ACTIVE", gpu)}
    if fid == "gpu-memory-pressure":
        extra = ("--fraction", str(p.fraction), "--mode", p.mode, "--duration", str(step.duration))
        return {**_agent_triplet(node, fid, gpu, *extra), "evidence_query": _dcgm("DCGM_FI_DEV_FB_USED", gpu)}
    if fid == "gpu-xid-error":
        extra = ("--xid", str(p.xid), "--kill-worker")
        notes = ("the kmsg XID line is signal-only; the real effect is SIGKILL of the GPU's worker process, "
                 "restarted by Ray/vLLM" + ("" if p.restart else " (params.restart=false is not honoured on k8s)"),)
        return {**_agent_triplet(node, fid, gpu, *extra), "evidence_query": _dcgm("DCGM_FI_DEV_XID_ERRORS", gpu),
                "notes": notes}
    if fid == "nccl-hang":
        return {**_agent_triplet(node, fid, gpu),
                "evidence_query": f'{s.vllm_metric_prefix}vllm:num_requests_running',
                "notes": ("SIGSTOP of the vLLM worker on the GPU; SIGCONT on recovery",)}
    raise InputInvalid(f"{fid}: not a rank fault")


def _node_fault(s: K8sSettings, step, node: str, name: str) -> dict[str, Any]:
    p, fid = step.params, step.id
    base = {"mode": "all", "selector": _selector(s, node), "duration": _dur(step.duration)}
    pods = f'namespace="{s.namespace}",pod=~".*-{node}-worker-.*"'
    if fid == "cpu-contention":
        obj = _chaos(s, "StressChaos", name, {**base, "stressors": {"cpu": {"workers": p.workers, "load": p.load}}})
        return {"chaos_objects": (obj,),
                "evidence_query": f'sum(rate(container_cpu_usage_seconds_total{{{pods}}}[30s]))'}
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
                "evidence_query": f'histogram_quantile(0.5, sum by (le) (rate({s.vllm_metric_prefix}'
                                  f'vllm:e2e_request_latency_seconds_bucket[30s])))'}
    if fid == "interconnect-degradation":
        return _interconnect(s, step, node, name, base, pods)
    if fid == "cpu-throttle":
        extra = ("--cpu-percent", str(p.cpu_percent), "--period-us", str(p.period_us))
        return {**_agent_triplet(node, fid, 0, *extra),
                "evidence_query": f'sum(rate(container_cpu_cfs_throttled_periods_total{{{pods}}}[30s]))',
                "notes": ("CFS quota on the Ray worker container's cgroup (as the local backend); a DVFS clamp "
                          "(cpupower) would need host cpufreq access and is not used",)}
    raise InputInvalid(f"{fid}: not a node fault")


def _interconnect(s: K8sSettings, step, node: str, name: str, base: dict, pods: str) -> dict[str, Any]:
    p = step.params
    direction = {"egress": "to", "ingress": "from", "both": "both"}[p.direction]
    bandwidth = {"rate": f"{max(1, round(p.rate_mbit * 125))}kbps", "limit": 20971520, "buffer": p.burst_kb * 1024}
    obj = _chaos(s, "NetworkChaos", name, {**base, "action": "bandwidth", "direction": direction,
                                           "target": _peers(s, node, role="worker"), "bandwidth": bandwidth})
    out: dict[str, Any] = {
        "chaos_objects": (obj,),
        "evidence_query": f'sum(rate(container_network_transmit_bytes_total{{{pods}}}[30s]))',
        "notes": ("tbf bandwidth limit between the node's Ray worker pod and the other workers: bites on "
                  "inter-node NCCL traffic over TCP sockets (NCCL_IB_DISABLE=1 is set); tc never touches RDMA",),
    }
    if s.gpus_per_node > 1:
        # Intra-node links too: a peer-copy hog saturates NVLink between the node's first two GPUs.
        cmds = _agent_triplet(node, "interconnect-degradation", 0, "--peer", "1", "--link", "nvlink",
                              "--duration", str(step.duration))
        out.update(cmds)
    return out


def plan_faults(s: K8sSettings, scenario) -> list[FaultAction]:
    """One FaultAction per step of ``scenario.spec.faults``."""
    actions = []
    for i, step in enumerate(scenario.spec.faults):
        spec = FAULTS[step.id]
        if spec.target == "rank":
            rank = step.target.rank
            node, gpu, component = s.rank_node(rank), s.rank_gpu(rank), f"rank-{rank}"
            parts = _gpu_fault(s, step, node, gpu)
        else:
            node, gpu, component = step.target.node, None, step.target.node
            parts = _node_fault(s, step, node, f"{s.name}-f{i}")  # <= 44 chars: a DNS label
        actions.append(FaultAction(step=i, fault_id=step.id, component=component, node=node, gpu=gpu,
                                   start_s=step.start, duration_s=step.duration, **parts))
    return actions
