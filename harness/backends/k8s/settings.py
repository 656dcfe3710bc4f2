"""What the k8s backend derives from a scenario: names, sizes, images and chart versions.

The scenario says what to run (topology, model, workload, faults); this module
turns it into the cluster-side facts every renderer shares, so the manifests,
the playbook variables and the Python client agree on every name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chaosbench.errors import InputInvalid
from chaosbench.faults.catalog import get_fault

if TYPE_CHECKING:
    from chaosbench.scenario import Scenario, TopologySpec

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
# The Ray Serve LLM image and the versions the rendered manifests need. The tag is one that KubeRay's and Ray's
# Serve-LLM examples pull (rayproject/ray-llm:<ray>-py311-cu128); placement_group_config in LLMConfig needs
# Ray >= 2.51, vLLM's kv_cache_usage_perc / inter_token_latency_seconds need vLLM >= 0.11.
IMAGE_DEFAULT = "rayproject/ray-llm:2.52.0-py311-cu128"
MIN_RAY = (2, 51, 0)
MIN_VLLM = (0, 11, 0)
RUN_ENV = "CHAOSBENCH_RAYSERVICE"  # set in every Ray pod: the fault agent finds this run's processes by it
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of device memory (a fault's cluster_engine_kwargs may lower it)
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
    gpu_product: str | None  # node selector: GPU feature discovery's nvidia.com/gpu.product label value
    accelerator_type: str | None  # Ray's accelerator name (LLMConfig.accelerator_type), e.g. "H100"
    nodes: int
    tensor_parallel: int
    data_parallel: int
    gpus_per_node: int
    model_id: str  # name served on the OpenAI API
    model_source: str  # HF id or path
    max_model_len: int
    engine_kwargs: dict[str, object] = field(default_factory=dict)
    step_s: float = 1.0
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION
    charts: dict[str, dict[str, str]] = field(default_factory=lambda: {k: dict(v) for k, v in CHARTS.items()})
    pipeline_parallel: int = 1  # vLLM's pipeline_parallel_size: stages per replica

    @property
    def world_size(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel * self.data_parallel

    @property
    def gpus_per_replica(self) -> int:
        """One Serve replica's vLLM engine: pipeline_parallel x tensor_parallel GPUs (its placement group)."""
        return self.tensor_parallel * self.pipeline_parallel

    def topology(self) -> TopologySpec:
        """The scenario's layout (replica, stage and tp index of every rank: chaosbench.scenario.TopologySpec)."""
        from chaosbench.scenario import TopologySpec

        return TopologySpec(nodes=self.nodes, tensor_parallel=self.tensor_parallel,
                            pipeline_parallel=self.pipeline_parallel, data_parallel=self.data_parallel)

    @property
    def node_names(self) -> list[str]:
        return [f"node-{i}" for i in range(self.nodes)]

    def rank_node(self, rank: int) -> str:
        """The node a rank is expected on before the cluster reports it (contiguous blocks, the scenario's model).

        Only the rendered plan uses it; a run maps ranks through ``placement.Placement`` (what the cluster reports).
        """
        return f"node-{rank * self.nodes // self.world_size}"

    @property
    def serve_service(self) -> str:
        return f"{self.name}-serve-svc"  # KubeRay names the serve Service <rayservice>-serve-svc

    @property
    def api_url(self) -> str:
        return f"http://{self.serve_service}.{self.namespace}.svc:{SERVE_PORT}"


def _dns_name(text: str, prefix: str = "cb-") -> str:
    name = re.sub(r"[^a-z0-9-]", "-", (prefix + text).lower()).strip("-")
    return name[:40].rstrip("-")


def from_scenario(scenario: Scenario) -> K8sSettings:
    """K8sSettings for ``scenario`` (a chaosbench.scenario.Scenario), whatever its backend field says."""
    spec = scenario.spec
    topo, model, k8s = spec.deployment.topology, spec.deployment.model, spec.deployment.k8s
    world = topo.world_size
    if world < topo.nodes:
        raise InputInvalid(f"{scenario.metadata.name}: {topo.nodes} nodes but only {world} ranks: some node has no GPU")
    gpus_per_node = math.ceil(world / topo.nodes)
    if world % topo.nodes:
        raise InputInvalid(f"{scenario.metadata.name}: {world} ranks do not split evenly over {topo.nodes} nodes "
                           "(each k8s worker group asks for the same GPU count)")
    engine_kwargs = dict(k8s.engine_kwargs)
    wanted: dict[str, object] = {}  # what the scenario's faults need from the engine (FaultSpec.cluster_engine_kwargs)
    for step in spec.faults:
        for key, value in get_fault(step.id).cluster_engine_kwargs.items():
            wanted.setdefault(key, value)
    engine_kwargs.setdefault("gpu_memory_utilization", wanted.pop("gpu_memory_utilization", GPU_MEMORY_UTILIZATION))
    for key, value in wanted.items():
        engine_kwargs.setdefault(key, value)
    return K8sSettings(
        name=_dns_name(scenario.metadata.name),
        namespace=k8s.namespace,
        kubeconfig=k8s.kubeconfig,
        image=k8s.image,
        agent_image=AGENT_IMAGE_DEFAULT,
        locust_image=LOCUST_IMAGE,
        gpu_product=k8s.gpu_product,
        accelerator_type=_accelerator_type(k8s.accelerator_type),
        nodes=topo.nodes,
        tensor_parallel=topo.tensor_parallel,
        data_parallel=topo.data_parallel,
        pipeline_parallel=topo.pipeline_parallel,
        gpus_per_node=gpus_per_node,
        model_id=model.name,
        model_source=model.path or DEFAULT_MODEL,
        max_model_len=model.max_seq_len,
        engine_kwargs=engine_kwargs,
        step_s=spec.telemetry.step,
        gpu_memory_utilization=float(engine_kwargs["gpu_memory_utilization"]),
    )


def _accelerator_type(name: str | None) -> str | None:
    """Ray's accelerator name, checked against ray.util.accelerators when Ray is importable (Ray refuses others)."""
    if name is None:
        return None
    try:
        from ray.util import accelerators
    except ImportError:
        return name
    known = {v for k, v in vars(accelerators).items() if k.isupper() and isinstance(v, str)}
    if name not in known:
        raise InputInvalid(f"k8s.accelerator_type {name!r} is not one of Ray's accelerator names "
                           f"(ray.util.accelerators, e.g. H100, A100, L4); the GPU product label for the node "
                           "selector goes in k8s.gpu_product")
    return name


def version_tuple(text: str) -> tuple[int, ...]:
    """'2.52.0' -> (2, 52, 0); a suffix such as 'rc1' or '+cu128' is ignored."""
    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3])


def image_ray_version(image: str) -> str:
    """The Ray version a rayproject/ray-llm tag carries; InputInvalid when the tag names none or one too old."""
    m = re.search(r":(\d+\.\d+\.\d+)", image)
    if not m:
        raise InputInvalid(f"k8s.image {image!r}: the tag must start with the Ray version (rayproject/ray-llm:"
                           "<ray>-py311-cu128): KubeRay's rayVersion and the version preflight read it from there")
    if version_tuple(m.group(1)) < MIN_RAY:
        raise InputInvalid(f"k8s.image {image!r}: Ray {m.group(1)} is older than "
                           f"{'.'.join(map(str, MIN_RAY))} (LLMConfig.placement_group_config)")
    return m.group(1)
