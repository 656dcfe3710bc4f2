"""Scenario -> every Kubernetes manifest, Helm values file and playbook variable of a k8s run.

Nothing here talks to a cluster: ``render_all`` returns documents in memory and
``write_rendered`` puts them under ``<out>/k8s/``::

    k8s/
      vars.yml               extra vars for playbooks/k8s/*.yml (paths point into this directory)
      manifests/*.yaml       namespace, DCGM counters, RayService, monitors, fault agent, profiler, Locust Job
      values/*.yaml          Helm values: gpu-operator, kuberay-operator, kube-prometheus-stack, chaos-mesh
      faults/NN-<id>.yaml    Chaos Mesh objects of fault step NN (node faults)
      faults/plan.json       per step: mechanism, agent commands, evidence query, notes
      collect/queries.json   PromQL per data.csv column
      plan.json              what was rendered and what a real run would do next
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from chaosbench.backends.k8s import collect
from chaosbench.backends.k8s.faults import plan_faults
from chaosbench.backends.k8s.placement import check_replicas_fit
from chaosbench.backends.k8s.settings import (
    APP_LABEL,
    DEFAULT_MODEL,
    METRICS_PORT,
    NODE_LABEL,
    PROFILER_DIR,
    RUN_ENV,
    SERVE_PORT,
    K8sSettings,
    from_scenario,
    image_ray_version,
)
from chaosbench.case import atomic_write_text
from chaosbench.errors import PreflightFailed

if TYPE_CHECKING:
    from chaosbench.scenario import Scenario

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
AGENT_FILE = HERE / "agent" / "fault_agent.py"
PROFILER_FILE = HERE / "agent" / "profile_window.py"
LOCUSTFILE = HERE.parents[1] / "load" / "locustfile.py"
GPU_OPERATOR_NAMESPACE = "gpu-operator"
K3S_CONTAINERD_SOCKET = "/run/k3s/containerd/containerd.sock"
SERVE_APP = "llm"

# DCGM fields beyond dcgm-exporter's defaults that the GPU/NCCL faults need (FAULTS.md).
DCGM_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz)."),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", "Power management limit (in W)."),
    ("DCGM_FI_DEV_ENFORCED_POWER_LIMIT", "gauge", "Enforced power limit (in W)."),
    ("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "gauge", "Clock event reasons bitmask (power cap; thermal; others)."),
    ("DCGM_FI_DEV_POWER_VIOLATION", "counter", "Throttling duration due to power constraints (in us)."),
    ("DCGM_FI_DEV_THERMAL_VIOLATION", "counter", "Throttling duration due to thermal constraints (in us)."),
    ("DCGM_FI_DEV_BOARD_LIMIT_VIOLATION", "counter", "Throttling duration due to board limit constraints (in us)."),
    ("DCGM_FI_DEV_RELIABILITY_VIOLATION", "counter", "Throttling duration due to reliability constraints (in us)."),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %)."),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered."),
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter", "Total number of single-bit volatile ECC errors."),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter", "Total number of double-bit volatile ECC errors."),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries."),
    ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter", "Total NVLink bandwidth counter for all lanes."),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active."),
    ("DCGM_FI_PROF_SM_ACTIVE", "gauge", "Ratio of cycles an SM has at least 1 warp assigned."),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge", "Ratio of cycles the tensor (HMMA) pipe is active."),
    ("DCGM_FI_PROF_DRAM_ACTIVE", "gauge", "Ratio of cycles the device memory interface is active."),
    ("DCGM_FI_PROF_PCIE_TX_BYTES", "gauge", "PCIe transmit rate (bytes/s)."),
    ("DCGM_FI_PROF_PCIE_RX_BYTES", "gauge", "PCIe receive rate (bytes/s)."),
    ("DCGM_FI_PROF_NVLINK_TX_BYTES", "gauge", "NVLink transmit rate (bytes/s)."),
    ("DCGM_FI_PROF_NVLINK_RX_BYTES", "gauge", "NVLink receive rate (bytes/s)."),
)


@dataclass(frozen=True)
class Rendered:
    """Everything of one k8s run, as text keyed by path relative to ``<out>/k8s``."""

    settings: K8sSettings
    files: dict[str, str]

    def documents(self, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """(file, object) for every Kubernetes object in files under ``prefix`` (YAML files only)."""
        out: list[tuple[str, dict[str, Any]]] = []
        for rel, text in sorted(self.files.items()):
            if rel.startswith(prefix) and rel.endswith(".yaml") and not rel.startswith("values/"):
                out.extend((rel, doc) for doc in yaml.safe_load_all(text) if doc)
        return out


@cache
def _env() -> Environment:
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined, keep_trailing_newline=True,
                       trim_blocks=True, lstrip_blocks=True, autoescape=False)


def _template(name: str, **ctx: Any) -> str:
    return _env().get_template(name).render(app_label=APP_LABEL, node_label=NODE_LABEL, **ctx)


def _step(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def dcgm_csv() -> str:
    """dcgm-exporter's counters file. The exporter reads it with Go's encoding/csv (comment '#', every record
    three fields: DCGM field, Prometheus type, help), so it is written by a CSV writer: a comma in a help
    text is quoted, not a fourth field."""
    buf = io.StringIO()
    buf.write("# chaosbench dcgm-exporter counters: DCGM field; Prometheus type; help\n")
    csv.writer(buf, lineterminator="\n").writerows(DCGM_FIELDS)
    return buf.getvalue()


def serve_config(s: K8sSettings) -> dict[str, Any]:
    """Ray Serve config (serveConfigV2) of the vLLM app built by ray.serve.llm:build_openai_app."""
    stages = {"pipeline_parallel_size": s.pipeline_parallel} if s.pipeline_parallel > 1 else {}
    engine_kwargs: dict[str, Any] = {"tensor_parallel_size": s.tensor_parallel, **stages,
                                     "max_model_len": s.max_model_len, **s.engine_kwargs,
                                     "gpu_memory_utilization": s.gpu_memory_utilization}
    # data parallel = Serve replicas, each one vLLM engine on its own placement group of pipeline_parallel x
    # tensor_parallel GPU bundles (Ray Serve LLM's cross-node parallelism guide); PACK spills stages to other
    # nodes when one node cannot hold them all
    llm_config: dict[str, Any] = {
        "model_loading_config": {"model_id": s.model_id, "model_source": s.model_source},
        "engine_kwargs": engine_kwargs,
        "deployment_config": {"num_replicas": s.data_parallel, "max_ongoing_requests": 256},
        "placement_group_config": {"bundles": [{"GPU": 1} for _ in range(s.gpus_per_replica)], "strategy": "PACK"},
        "log_engine_metrics": True,
        "runtime_env": {"env_vars": _engine_env(s)},
    }
    if s.accelerator_type:
        llm_config["accelerator_type"] = s.accelerator_type
    return {
        "http_options": {"host": "0.0.0.0", "port": SERVE_PORT},
        "applications": [{"name": SERVE_APP, "route_prefix": "/", "import_path": "ray.serve.llm:build_openai_app",
                          "args": {"llm_configs": [llm_config]}}],
    }


def _engine_env(s: K8sSettings) -> dict[str, str]:
    env = {"VLLM_TORCH_PROFILER_DIR": PROFILER_DIR, "VLLM_TORCH_PROFILER_WITH_STACK": "0"}
    if s.engine_kwargs.get("disable_custom_all_reduce"):
        env["NCCL_IB_DISABLE"] = "1"  # NCCL over TCP sockets, so Chaos Mesh's tc rules reach the collectives
    return env


def _ray_env(s: K8sSettings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": RUN_ENV, "value": s.name},  # inherited by every Ray process: the fault agent finds the run by it
        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
        {"name": "RAY_metrics_report_interval_ms", "value": str(max(1000, int(s.step_s * 1000)))},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}},
    ]
    env.extend({"name": k, "value": v} for k, v in _engine_env(s).items())
    return env


def locust_files(s: K8sSettings, scenario: Scenario) -> dict[str, str]:
    """The harness's own locustfile and its config (the local driver's LoadConfig, paths inside the Job)."""
    from dataclasses import asdict

    from chaosbench.load.driver import LoadConfig

    if not LOCUSTFILE.is_file():
        raise PreflightFailed(f"{LOCUSTFILE}: missing; the k8s Locust Job runs the harness's own locustfile")
    config = {**asdict(LoadConfig.from_scenario(scenario, s.api_url)),
              "requests_path": "/out/requests.jsonl", "started_path": "/out/started.json"}
    return {"locustfile.py": LOCUSTFILE.read_text(), "load-config.json": json.dumps(config, indent=2) + "\n"}


def _locust(s: K8sSettings, scenario: Scenario) -> dict[str, Any]:
    w = scenario.spec.workload
    # Same command line as harness/load/driver.py; the container then waits to be collected.
    shell = (
        f"locust -f /mnt/locust/locustfile.py --headless -u {w.users} -r {w.spawn_rate:g} "
        f"-t {max(1, round(w.duration))}s --host {s.api_url} --csv /out/locust --exit-code-on-error 0 "
        "--only-summary --loglevel WARNING --stop-timeout 10 > /out/locust.log 2>&1 & "
        "echo $! > /out/locust.pid; wait $!; echo $? > /out/exit_code; sleep 3600"
    )
    env = [{"name": "CHAOSBENCH_LOAD_CONFIG", "value": "/mnt/locust/load-config.json"},
           {"name": "PYTHONUNBUFFERED", "value": "1"}]
    return {"locust_files": locust_files(s, scenario), "locust_shell": shell, "locust_env": env,
            "job_deadline": int(w.duration) + 3600 + 600}


def manifests(s: K8sSettings, scenario: Scenario) -> dict[str, str]:
    step = _step(s.step_s)
    serve_yaml = yaml.safe_dump(serve_config(s), sort_keys=False)
    return {
        "manifests/00-namespace.yaml": _template("namespace.yaml.j2", s=s),
        "manifests/10-dcgm-counters.yaml": _template("dcgm-counters.yaml.j2", dcgm_csv=dcgm_csv(),
                                                     gpu_operator_namespace=GPU_OPERATOR_NAMESPACE),
        "manifests/20-profiler.yaml": _template("profiler.yaml.j2", s=s, profile_script=PROFILER_FILE.read_text()),
        "manifests/30-rayservice.yaml": _template(
            "rayservice.yaml.j2", s=s, serve_config=serve_yaml, ray_version=image_ray_version(s.image),
            ray_env=_ray_env(s), metrics_port=METRICS_PORT, serve_port=SERVE_PORT, profiler_dir=PROFILER_DIR),
        "manifests/40-monitors.yaml": _template("monitors.yaml.j2", s=s, step=step),
        "manifests/50-fault-agent.yaml": _template("fault-agent.yaml.j2", s=s, agent_script=AGENT_FILE.read_text()),
        "manifests/60-locust.yaml": _template("locust-job.yaml.j2", s=s, **_locust(s, scenario)),
    }


def helm_values(s: K8sSettings, install_driver: bool = False) -> dict[str, str]:
    """Helm values; the *-k3s.yaml overlays are added by the roles when site.yml installed k3s."""
    step = _step(s.step_s)
    return {
        "values/gpu-operator.yaml": _template("values/gpu-operator.yaml.j2", install_driver=install_driver,
                                              step=step, step_ms=max(100, int(s.step_s * 1000))),
        "values/kube-prometheus-stack.yaml": _template("values/kube-prometheus-stack.yaml.j2", step=step),
        "values/kuberay-operator.yaml": _template("values/kuberay-operator.yaml.j2", s=s),
        "values/chaos-mesh.yaml": _template("values/chaos-mesh.yaml.j2",
                                            runtime_socket="/run/containerd/containerd.sock"),
        "values/chaos-mesh-k3s.yaml": _template("values/chaos-mesh.yaml.j2", runtime_socket=K3S_CONTAINERD_SOCKET),
        "values/gpu-operator-k3s.yaml": _template("values/gpu-operator-k3s.yaml.j2"),
    }


def playbook_vars(s: K8sSettings, scenario: Scenario, k8s_dir: Path, fault_files: list[str]) -> dict[str, Any]:
    """Extra vars for playbooks/k8s/*.yml. Paths are absolute so ansible-runner can run from anywhere."""
    return {
        "cb_scenario": scenario.metadata.name,
        "cb_render_dir": str(k8s_dir),
        "cb_namespace": s.namespace,
        "cb_kubeconfig": s.kubeconfig or "",
        "cb_install_k3s": False,  # true: site.yml installs k3s on the inventory's k3s_server/gpu_nodes hosts
        # templated by Ansible when used: the k3s kubeconfig site.yml fetched, or the given/default one
        "cb_kubeconfig_path": "{{ (cb_render_dir ~ '/kubeconfig') if (cb_install_k3s | bool) else "
                              "(cb_kubeconfig or lookup('ansible.builtin.env', 'KUBECONFIG') "
                              "or lookup('ansible.builtin.env', 'HOME') ~ '/.kube/config') }}",
        "cb_node_map": {},  # node-<i> -> Kubernetes node name on an existing cluster (k3s: from the inventory)
        "cb_rayservice": s.name,
        "cb_nodes": s.node_names,
        "cb_gpus_per_node": s.gpus_per_node,
        "cb_node_label": NODE_LABEL,
        "cb_gpu_operator_namespace": GPU_OPERATOR_NAMESPACE,
        "cb_charts": s.charts,
        "cb_manifests": sorted(str(k8s_dir / m) for m in _manifest_names() if not m.endswith("60-locust.yaml")),
        "cb_locust_manifest": str(k8s_dir / "manifests/60-locust.yaml"),
        "cb_fault_manifests": [str(k8s_dir / f) for f in fault_files],
        "cb_ready_timeout_s": 1800,
    }


def _manifest_names() -> list[str]:
    return ["manifests/00-namespace.yaml", "manifests/10-dcgm-counters.yaml", "manifests/20-profiler.yaml",
            "manifests/30-rayservice.yaml", "manifests/40-monitors.yaml", "manifests/50-fault-agent.yaml",
            "manifests/60-locust.yaml"]


def render_all(scenario: Scenario, k8s_dir: Path) -> Rendered:
    s = from_scenario(scenario)
    check_replicas_fit(s)
    files = {**manifests(s, scenario), **helm_values(s)}
    actions = plan_faults(s, scenario)
    fault_files = []
    for action in actions:
        if action.chaos_objects:
            rel = f"faults/{action.step:02d}-{action.fault_id}.yaml"
            files[rel] = yaml.safe_dump_all(list(action.chaos_objects), sort_keys=False)
            fault_files.append(rel)
    files["faults/plan.json"] = json.dumps([a.to_json() for a in actions], indent=2) + "\n"
    files["collect/queries.json"] = json.dumps([q.to_json() for q in collect.column_queries(s, scenario)],
                                               indent=2) + "\n"
    files["vars.yml"] = yaml.safe_dump(playbook_vars(s, scenario, k8s_dir, fault_files), sort_keys=False)
    files["plan.json"] = json.dumps(_plan(s, scenario, sorted(files)), indent=2) + "\n"
    return Rendered(settings=s, files=files)


def _plan(s: K8sSettings, scenario: Scenario, names: list[str]) -> dict[str, Any]:
    engine = scenario.spec.deployment.engine
    return {
        "scenario": scenario.metadata.name,
        "backend": "k8s",
        "engine": "vllm",
        "engine_note": None if engine == "vllm" else f"scenario engine {engine!r}: the k8s backend serves vLLM",
        "rayservice": s.name,
        "namespace": s.namespace,
        "api_url": s.api_url,
        "model": {"id": s.model_id, "source": s.model_source},
        "topology": {"nodes": s.nodes, "tensor_parallel": s.tensor_parallel, "data_parallel": s.data_parallel,
                     "pipeline_parallel": s.pipeline_parallel, "gpus_per_node": s.gpus_per_node,
                     "layout": s.topology().grid.record(),
                     "rank_node": {f"rank-{r}": s.rank_node(r) for r in range(s.world_size)},
                     "placement": "expected: the run maps ranks to GPUs from what the fault agents' locate reports "
                                  "(vLLM's rank order, NVML UUIDs)"},
        "files": names + ["plan.json"],
        "warnings": _warnings(s),
        "touched_cluster": False,
    }


def _warnings(s: K8sSettings) -> list[str]:
    out = []
    if "ray" not in s.image.split("/")[-1]:
        out.append(f"image {s.image!r} must contain Ray Serve LLM (ray[serve,llm]) and vLLM for the RayService; "
                   "e.g. rayproject/ray-llm:<ray version>-py311-cu128")
    if s.gpu_product and not s.accelerator_type:
        out.append(f"k8s.gpu_product {s.gpu_product!r} selects the nodes; Ray's accelerator_type is not set "
                   "(Ray schedules on any GPU of those nodes)")
    if s.model_source == DEFAULT_MODEL:
        out.append(f"model.path not set: serving {DEFAULT_MODEL} (downloaded from the Hugging Face hub by the pods)")
    return out


def write_rendered(rendered: Rendered, k8s_dir: Path) -> list[Path]:
    paths = []
    for rel, text in sorted(rendered.files.items()):
        path = k8s_dir / rel
        atomic_write_text(path, text)
        paths.append(path)
    return paths
