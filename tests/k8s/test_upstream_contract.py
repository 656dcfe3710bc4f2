"""Contract tests: the k8s rendering held to upstream formats and names, offline.

The fixtures under recorded/upstream/ were read from upstream source and documentation; each file's header
names its origin:
- dcgm-default-counters.csv: NVIDIA/dcgm-exporter etc/default-counters.csv (verbatim);
- dcgm-fields.txt: NVIDIA/go-dcgm pkg/dcgm/const_fields.go field-name map (the names dcgm-exporter accepts);
- dcgm-exporter-metrics.prom: NVIDIA GPU Operator docs, dcgm-exporter /metrics sample (its labels);
- metric-names.txt: vLLM vllm/v1/metrics/loggers.py, vllm/v1/metrics/ray_wrappers.py with Ray's
  ray/_private/metrics_agent.py (Ray Serve LLM names), google/cadvisor docs/storage/prometheus.md,
  prometheus/node_exporter collectors.
The counters-file rule is dcgm-exporter's own (internal/pkg/counters/counter_config.go): Go encoding/csv
with Comment '#', default FieldsPerRecord (every record as long as the first) and strict quotes, then every
record trimmed and exactly three fields: DCGM field, Prometheus type, help.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml

from chaosbench.backends.k8s import collect
from chaosbench.backends.k8s.faults import plan_faults
from chaosbench.backends.k8s.render import dcgm_csv, render_all, serve_config
from chaosbench.backends.k8s.settings import from_scenario
from chaosbench.errors import InputInvalid
from chaosbench.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = Path(__file__).parent / "recorded" / "upstream"
SCENARIOS = sorted(p for p in (REPO / "scenarios").glob("*.yaml") if not p.name.startswith("_"))
PROM_TYPES = {"gauge", "counter", "histogram", "summary", "label"}  # dcgm-exporter's promMetricType keys


def dcgm_exporter_records(text: str) -> list[list[str]]:
    """The counters file as dcgm-exporter reads it; ValueError with its reason where the exporter fails."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]  # csv.Reader.Comment = '#'
    records = []
    for n, line in enumerate(lines, 1):
        # Go's strict quotes (LazyQuotes false): a '"' may only open a field, right after the comma, and close it
        if re.search(r'(^|,)[^,"]+"|(^|,)\s+"', line):
            raise ValueError(f"line {n}: bare \" in non-quoted field")
        records.append(next(csv.reader([line])))
    if records and any(len(r) != len(records[0]) for r in records):  # FieldsPerRecord = 0
        bad = next(r for r in records if len(r) != len(records[0]))
        raise ValueError(f"wrong number of fields: {bad}")
    out = []
    for i, record in enumerate(records):
        record = [f.strip(" ") for f in record]
        if len(record) != 3:
            raise ValueError(f"malformed CSV record; failed to parse line {i} ({record}), expected 3 fields")
        if record[1] not in PROM_TYPES:
            raise ValueError(f"could not find Prometheus metric type {record[1]!r}")
        out.append(record)
    return out


def recorded_fields() -> set[str]:
    return {ln.split()[0] for ln in (UPSTREAM / "dcgm-fields.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")}


def recorded_names() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    section = ""
    for line in (UPSTREAM / "metric-names.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        out.setdefault(section, set()).add(line)
    return out


# ----------------------------------------------------------------------------- dcgm-exporter counters


def test_the_exporters_rule_accepts_upstreams_own_file_and_refuses_a_comma_in_help():
    upstream = dcgm_exporter_records((UPSTREAM / "dcgm-default-counters.csv").read_text())
    assert ["DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."] in upstream
    assert {r[0] for r in upstream} <= recorded_fields() | {
        "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_PCIE_TX_THROUGHPUT",
        "DCGM_FI_DEV_PCIE_RX_THROUGHPUT", "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL",
        "DCGM_FI_DEV_VGPU_LICENSE_STATUS", "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_ROW_REMAP_FAILURE"}
    with pytest.raises(ValueError, match="fields"):  # what the old rendering wrote
        dcgm_exporter_records("DCGM_FI_DEV_SM_CLOCK, gauge, SM clock.\n"
                              "DCGM_FI_DEV_CLOCKS_EVENT_REASONS, gauge, Clock event reasons (power cap, thermal, ...).\n")
    with pytest.raises(ValueError, match="bare"):
        dcgm_exporter_records('DCGM_FI_DEV_SM_CLOCK, gauge, "quoted after a space"\n')


def test_rendered_counters_file_parses_as_dcgm_exporter_reads_it(tmp_path: Path):
    records = dcgm_exporter_records(dcgm_csv())
    assert len(records) >= 20
    unknown = {r[0] for r in records} - recorded_fields()
    assert not unknown, f"not DCGM field names in go-dcgm's map: {unknown}"
    # the ConfigMap the gpu-operator mounts at /etc/dcgm-exporter carries the same text under the collectors key
    rendered = render_all(load_scenario(REPO / "scenarios" / "gpu-power-cap.yaml", {"deployment": {"backend": "k8s"}}),
                          tmp_path)
    cm = yaml.safe_load(rendered.files["manifests/10-dcgm-counters.yaml"])
    assert dcgm_exporter_records(cm["data"]["dcgm-metrics.csv"]) == records
    values = yaml.safe_load(rendered.files["values/gpu-operator.yaml"])
    env = {e["name"]: e["value"] for e in values["dcgmExporter"]["env"]}
    assert env["DCGM_EXPORTER_COLLECTORS"] == "/etc/dcgm-exporter/dcgm-metrics.csv"


# ----------------------------------------------------------------------------- PromQL metric names

_NAME = re.compile(r"(?<![\w:\"])(ray_[a-zA-Z0-9_]+|vllm:[a-zA-Z0-9_:]+|DCGM_FI_[A-Z0-9_]+|container_[a-z0-9_]+"
                   r"|node_[a-zA-Z0-9_]+)")


def _metric_names(query: str) -> set[str]:
    body = re.sub(r"\{[^}]*\}", "", query)  # label matchers: label values are not metric names
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in _NAME.findall(body)}


def _all_queries(scenario) -> list[str]:
    s = from_scenario(scenario)
    out = [q.query for q in collect.column_queries(s, scenario)]
    out += [a.evidence_query for a in plan_faults(s, scenario) if a.evidence_query]
    spec = scenario.spec
    out += [collect.cluster_promql(s, p.query) for p in getattr(spec, "steady_state", []) or []
            if getattr(p, "query", None)]
    out += [collect.cluster_promql(s, c.query) for c in getattr(spec, "stop_conditions", []) or []
            if getattr(c, "query", None)]
    return out


def test_ray_serve_llm_names_follow_vllm_and_rays_rule():
    names = recorded_names()
    assert {collect.ray_metric_name(n) for n in names["vllm"]} == names["ray_serve_llm"]
    assert collect.cluster_promql(from_scenario(load_scenario(REPO / "scenarios" / "clean.yaml")),
                                  "histogram_quantile(0.9, rate(vllm:e2e_request_latency_seconds_bucket[1m]))") == \
        "histogram_quantile(0.9, rate(ray_vllm_e2e_request_latency_seconds_bucket[1m]))"


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_promql_names_only_recorded_upstream_metrics(path: Path):
    scenario = load_scenario(path, {"deployment": {"backend": "k8s"}})
    names = recorded_names()
    known = names["ray_serve_llm"] | names["cadvisor"] | names["node_exporter"] | recorded_fields()
    queries = _all_queries(scenario)
    assert len(queries) > 50
    used = set().union(*(_metric_names(q) for q in queries))
    assert not {n for n in used if n.startswith("vllm:")}, "vLLM's own names do not exist under Ray Serve LLM"
    assert used <= known, f"not in the recorded upstream names: {sorted(used - known)}"
    # rank GPUs are selected by a label dcgm-exporter really sets (recorded exposition sample)
    labels = re.search(r"\{(.*)\}", (UPSTREAM / "dcgm-exporter-metrics.prom").read_text().splitlines()[-1]).group(1)
    dcgm_labels = {kv.split("=")[0] for kv in labels.split(",")}
    for q in queries:
        for sel in re.findall(r"DCGM_FI_\w+\{([^}]*)\}", q):
            assert {kv.split("=")[0] for kv in sel.split(",")} <= dcgm_labels, q


def test_rate_windows_hold_four_samples_of_each_source():
    scenario = load_scenario(REPO / "scenarios" / "cpu-contention.yaml", {"deployment": {"backend": "k8s"}})
    s = from_scenario(scenario)
    queries = _all_queries(scenario)
    checked = 0
    for q in queries:
        for metric, window in re.findall(r"(\w+)(?:\{[^}]*\})?\[(\d+)s\]", q):
            floor = 4 * collect.CADVISOR_INTERVAL_S if metric.startswith("container_") else 4 * s.step_s
            assert int(window) >= floor, (q, metric, window)
            checked += 1
    assert checked > 20


def test_dcgm_and_ray_scrapes_run_at_the_step_the_windows_assume(tmp_path: Path):
    scenario = load_scenario(REPO / "scenarios" / "clean.yaml", {"deployment": {"backend": "k8s"}})
    rendered = render_all(scenario, tmp_path)
    step = f"{scenario.spec.telemetry.step:g}s"
    values = yaml.safe_load(rendered.files["values/gpu-operator.yaml"])
    assert values["dcgmExporter"]["serviceMonitor"]["interval"] == step
    monitor = yaml.safe_load(rendered.files["manifests/40-monitors.yaml"])
    assert monitor["spec"]["podMetricsEndpoints"][0]["interval"] == step


# ----------------------------------------------------------------------------- Ray Serve LLM's LLMConfig


def _llm_config_model():
    try:
        from ray.serve.llm import LLMConfig
    except Exception as exc:  # noqa: BLE001 - ray[llm] pulls vllm and pyarrow; any import failure means "not here"
        pytest.skip(f"ray.serve.llm not importable here ({type(exc).__name__}: {str(exc)[:120]}); "
                    "serveConfigV2 is still checked against Ray Serve's ServeDeploySchema by validate.py")
    return LLMConfig


@pytest.mark.parametrize("name", ["clean", "nccl-hang", "gpu-memory-pressure"])
def test_serve_config_llm_configs_validate_against_rays_llmconfig(name: str):
    LLMConfig = _llm_config_model()
    scenario = load_scenario(REPO / "scenarios" / f"{name}.yaml", {"deployment": {"backend": "k8s"}})
    for cfg in serve_config(from_scenario(scenario))["applications"][0]["args"]["llm_configs"]:
        LLMConfig.model_validate(cfg)


# ----------------------------------------------------------------------------- node selection vs Ray accelerator


def test_gpu_product_and_ray_accelerator_type_are_separate_settings(tmp_path: Path):
    over = {"deployment": {"backend": "k8s", "k8s": {"gpu_product": "NVIDIA-H100-80GB-HBM3",
                                                     "accelerator_type": "H100"}}}
    rendered = render_all(load_scenario(REPO / "scenarios" / "clean.yaml", over), tmp_path)
    service = yaml.safe_load(rendered.files["manifests/30-rayservice.yaml"])
    group = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert group["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    llm = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]["llm_configs"][0]
    assert llm["accelerator_type"] == "H100"
    assert "serviceUnhealthySecondThreshold" not in service["spec"]  # deprecated since KubeRay 1.3
    bad = {"deployment": {"backend": "k8s", "k8s": {"accelerator_type": "NVIDIA-H100-80GB-HBM3"}}}
    with pytest.raises(InputInvalid, match="not one of Ray's accelerator names"):
        from_scenario(load_scenario(REPO / "scenarios" / "clean.yaml", bad))


def test_image_pins_the_ray_version_the_manifests_need(tmp_path: Path):
    rendered = render_all(load_scenario(REPO / "scenarios" / "clean.yaml", {"deployment": {"backend": "k8s"}}),
                          tmp_path)
    service = yaml.safe_load(rendered.files["manifests/30-rayservice.yaml"])
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == "2.52.0"
    images = {c["image"] for c in service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"]}
    assert images == {"rayproject/ray-llm:2.52.0-py311-cu128"}
    old = {"deployment": {"backend": "k8s", "k8s": {"image": "rayproject/ray-llm:2.49.0-py311-cu128"}}}
    with pytest.raises(InputInvalid, match="older than 2.51.0"):
        render_all(load_scenario(REPO / "scenarios" / "clean.yaml", old), tmp_path / "old")
