"""What the k8s backend derives from a scenario: names, sizes, images and chart versions.

The scenario says what to run (topology, model, workload, faults); this module
turns it into the cluster-side facts every renderer shares, so the manifests,
the playbook variables and the Python client agree on every name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from harness.errors import InputInvalid

# Chart versions pinned for reproducibility; playbook variables can override them.
CHARTS: dict[str, dict[str, str]] = {
    "gpu_operator": {"repo": "https://helm.ngc.nvidia.com/nvidia", "chart": "gpu-operator", "version": "v25.3.0"},
    "kuberay_operator": {"repo": "https://ray-project.github.io/kuberay-helm/", "chart": "kuberay-operator",
                         "version": "1.4.2"},
    "kube_prometheus_stack": {"repo": "https://prometheus-community.github.io/helm-charts",
                              "chart": "kube-prometheus-stack", "version": "75.15.1"},
    "chaos_mesh": {"repo": "https://charts.chaos-mesh.org", "chart": "chaos-mesh", "version": "2.7.2"},
}

NODE_LABEL = "chaosbench.io/node"  # k8s node label carrying node-<i>
APP_LABEL = "app.kubernetes.io/part-of"
DEFAULT_MODEL = "Qwen/Qwen3-0.6B"  # 16 heads / 8 KV heads: splits over TP 1, 2, 4, 8
LOCUST_IMAGE = "locustio/locust:2.37.0"
AGENT_IMAGE_DEFAULT = "nvcr.io/nvidia/pytorch:25.01-py3"  # torch + CUDA + nvidia-smi for the GPU hogs
PROFILER_DIR = "/tmp/chaosbench-profile"
SERVE_PORT = 8000
METRICS_PORT = 8080


@dataclass(frozen=True)
class K8sSettings:
    name: str  # RayService name (DNS-1035 label)
    namespace: str
    kubeconfig: str | None
    image: str  # Ray + vLLM image for head and workers
    agent_image: str
    locust_image: str
    gpu_type: str | None
    nodes: int
    tensor_parallel: int
    data_parallel: int
    gpus_per_node: int
    model_id: str  # name served on the OpenAI API
    model_source: str  # HF id or path
    max_model_len: int
    engine_kwargs: dict[str, object] = field(default_factory=dict)
    step_s: float = 1.0
    vllm_metric_prefix: str = "ray_"  # Ray re-exports vLLM's metrics with its own prefix
    charts: dict[str, dict[str, str]] = field(default_factory=lambda: {k: dict(v) for k, v in CHARTS.items()})

    @property
    def world_size(self) -> int:
        return self.tensor_parallel * self.data_parallel

    @property
    def node_names(self) -> list[str]:
        return [f"node-{i}" for i in range(self.nodes)]

    def rank_node(self, rank: int) -> str:
        """Contiguous blocks, as the scenario model places ranks."""
        return f"node-{rank * self.nodes // self.world_size}"

    def rank_gpu(self, rank: int) -> int:
        """Local GPU index of a rank on its node (its place in the node's block)."""
        node = self.rank_node(rank)
        first = min(r for r in range(self.world_size) if self.rank_node(r) == node)
        return rank - first

    @property
    def serve_service(self) -> str:
        return f"{self.name}-serve-svc"  # KubeRay names the serve Service <rayservice>-serve-svc

    @property
    def api_url(self) -> str:
        return f"http://{self.serve_service}.{self.namespace}.svc:{SERVE_PORT}"


def _dns_name(text: str, prefix: str = "cb-") -> str:
    name = re.sub(r"[^a-z0-9-]", "-", (prefix + text).lower()).strip("-")
    return name[:40].rstrip("-")


def from_scenario(scenario) -> K8sSettings:
    """K8sSettings for ``scenario`` (a harness.scenario.Scenario), whatever its backend field says."""
    spec = scenario.spec
    topo, model, k8s = spec.deployment.topology, spec.deployment.model, spec.deployment.k8s
    world = topo.tensor_parallel * topo.data_parallel
    if world < topo.nodes:
        raise InputInvalid(f"{scenario.metadata.name}: {topo.nodes} nodes but only {world} ranks: some node has no GPU")
    gpus_per_node = math.ceil(world / topo.nodes)
    engine_kwargs = dict(k8s.engine_kwargs)
    uses_nccl_fault = any(step.id in {"nccl-hang", "interconnect-degradation"} for step in spec.faults)
    if uses_nccl_fault:
        # vLLM's custom all-reduce bypasses NCCL inside a node: NCCL faults would not bite (FAULTS.md).
        engine_kwargs.setdefault("disable_custom_all_reduce", True)
    return K8sSettings(
        name=_dns_name(scenario.metadata.name),
        namespace=k8s.namespace,
        kubeconfig=k8s.kubeconfig,
        image=k8s.image,
        agent_image=AGENT_IMAGE_DEFAULT,
        locust_image=LOCUST_IMAGE,
        gpu_type=k8s.gpu_type,
        nodes=topo.nodes,
        tensor_parallel=topo.tensor_parallel,
        data_parallel=topo.data_parallel,
        gpus_per_node=gpus_per_node,
        model_id=model.name,
        model_source=model.path or DEFAULT_MODEL,
        max_model_len=model.max_seq_len,
        engine_kwargs=engine_kwargs,
        step_s=spec.telemetry.step,
    )
