"""Collection on a cluster: Prometheus range queries into data.csv, vLLM profiler traces, pod logs.

data.csv has the local backend's shape and names (harness/collect/prometheus.py): a
``time`` column (unix seconds, one row per step) and ``<component>_<metric>`` columns,
components ``ingress``, ``node-<i>`` and ``rank-<i>``; metric parts keep the local
names (vLLM's ``vllm:*``, DCGM's, the local exporter's) with the same derivation suffixes
(``:rate``, ``:mean``, ``:p95``), so a detector sees one shape on both backends. Each column
is one PromQL query over the cluster's metric names, reduced to a single series.

Placeholders filled in at run time from what the cluster reports (``ClusterView``):
``{k8s_node}`` the Kubernetes node of the component (node labels), ``{worker_pods}`` the
node's Ray worker pod names (found by pod labels), ``{gpu_uuid}`` the rank's GPU (the fault
agents' ``locate``, see placement.py). Querying, gap filling and the client-side SLIs reuse
chaosbench.collect.prometheus.
"""

from __future__ import annotations

import base64
import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chaosbench.backends.k8s.placement import Placement, expected
from chaosbench.backends.k8s.settings import PROFILER_DIR, K8sSettings
from chaosbench.errors import PreflightFailed

if TYPE_CHECKING:
    from chaosbench.backends.k8s.client import K8sClient
    from chaosbench.load.summary import RequestRecord
    from chaosbench.scenario import Scenario

VLLM_HISTOGRAMS = ("time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds",
                   "request_queue_time_seconds")
VLLM_GAUGES = {"num_requests_running": "sum", "num_requests_waiting": "sum", "kv_cache_usage_perc": "avg"}
VLLM_COUNTERS = ("num_preemptions_total", "request_success_total", "generation_tokens_total", "prompt_tokens_total")
DCGM_GAUGES = ("DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_POWER_MGMT_LIMIT",
               "DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_UTIL",
               "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
               "DCGM_FI_PROF_PCIE_TX_BYTES", "DCGM_FI_PROF_PCIE_RX_BYTES", "DCGM_FI_PROF_NVLINK_TX_BYTES",
               "DCGM_FI_PROF_NVLINK_RX_BYTES")
DCGM_COUNTERS = ("DCGM_FI_DEV_POWER_VIOLATION", "DCGM_FI_DEV_THERMAL_VIOLATION", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
                 "DCGM_FI_DEV_PCIE_REPLAY_COUNTER")
RAY_PREFIX = "ray_"  # Ray's metrics agent: every application metric is exported as ray_<name>
CADVISOR_INTERVAL_S = 10.0  # kubelet's cAdvisor housekeeping: container_* samples ~10 s apart, timestamps honoured


def ray_metric_name(name: str) -> str:
    """vLLM's metric name as Prometheus sees it under Ray Serve LLM.

    vLLM's Ray stat logger (vllm/v1/metrics/ray_wrappers.py, ``_get_sanitized_opentelemetry_name``) turns
    every character outside [a-zA-Z0-9_] into ``_``; Ray's metrics agent prefixes ``ray_``. Suffixes
    (``_total``, ``_bucket``, ``_sum``, ``_count``) come through unchanged: ``vllm:request_success_total``
    -> ``ray_vllm_request_success_total``.
    """
    return RAY_PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", name)


@dataclass(frozen=True)
class ClusterView:
    """What the cluster reported, to fill in query placeholders."""

    node_map: dict[str, str]  # node-<i> -> Kubernetes node
    worker_pods: dict[str, list[str]] = field(default_factory=dict)  # node-<i> -> Ray worker pod names
    placement: Placement | None = None


@dataclass(frozen=True)
class ColumnQuery:
    column: str  # <component>_<metric>
    component: str
    query: str  # PromQL, may contain {k8s_node}
    kind: str = "gauge"  # gauge | rate (how gaps are filled)

    def to_json(self) -> dict[str, str]:
        return {"column": self.column, "component": self.component, "query": self.query, "kind": self.kind}

    def resolve(self, view: ClusterView, s: K8sSettings) -> str:
        return resolve_query(self.query, view, s, self.component, self.column)


def resolve_query(query: str, view: ClusterView, s: K8sSettings, component: str, what: str = "") -> str:
    """``query`` with its placeholders filled in for ``component``; PreflightFailed names what is missing."""
    what = what or component
    placement = view.placement or expected(s)
    node = component_node(placement, component)
    if "{k8s_node}" in query:
        if node is None or node not in view.node_map:
            raise PreflightFailed(f"{what}: no Kubernetes node labelled {node}")
        query = query.replace("{k8s_node}", view.node_map[node])
    if "{worker_pods}" in query:
        pods = view.worker_pods.get(node or "", [])
        if not pods:
            raise PreflightFailed(f"{what}: no Ray worker pod labelled chaosbench.io/node={node}")
        query = query.replace("{worker_pods}", "|".join(re.escape(p) for p in pods))
    if "{gpu_uuid}" in query:
        if view.placement is None or not component.startswith("rank-"):
            raise PreflightFailed(f"{what}: the rank's GPU is not known (the fault agents' locate did not run)")
        query = query.replace("{gpu_uuid}", view.placement.gpu(int(component.split("-", 1)[1])))
    return query


def rate_window(s: K8sSettings, sample_interval_s: float | None = None) -> str:
    """A rate() range that holds at least four samples of a series scraped every ``sample_interval_s``
    (default: the scenario's step, the interval of every scrape the backend configures)."""
    interval = max(s.step_s, sample_interval_s or s.step_s)
    return f"{max(5, round(4 * interval))}s"


def _ingress(s: K8sSettings) -> list[tuple[str, str, str]]:
    w = rate_window(s)
    out = []
    for h in VLLM_HISTOGRAMS:
        n = ray_metric_name(f"vllm:{h}")
        rate_sum, rate_count = f"sum(rate({n}_sum[{w}]))", f"sum(rate({n}_count[{w}]))"
        out += [(f"vllm:{h}:mean", f"{rate_sum} / {rate_count}", "gauge"),
                (f"vllm:{h}:p95", f"histogram_quantile(0.95, sum by (le) (rate({n}_bucket[{w}])))", "gauge"),
                (f"vllm:{h}:rate", rate_count, "rate")]
    out += [(f"vllm:{g}", f"{agg}({ray_metric_name(f'vllm:{g}')})", "gauge") for g, agg in VLLM_GAUGES.items()]
    out += [(f"vllm:{c.removesuffix('_total')}:rate", f"sum(rate({ray_metric_name(f'vllm:{c}')}[{w}]))", "rate")
            for c in VLLM_COUNTERS]
    return out


def _node(s: K8sSettings, node: str) -> list[tuple[str, str, str]]:
    """The node as a host (node-exporter, named like the local ``host_*`` columns) and its Ray worker
    pod as the node's processes (cAdvisor, named like the local exporter's ``chaosbench_node_*``)."""
    w, sel = rate_window(s), 'k8s_node="{k8s_node}"'
    wc = rate_window(s, CADVISOR_INTERVAL_S)
    pod = f'namespace="{s.namespace}",pod=~"{{worker_pods}}"'
    pods = f'{pod},container!=""'
    nic = f'{sel},device!~"lo|veth.*|cali.*|flannel.*|cni.*|docker.*"'

    def rate(metric: str, sel_: str = pods) -> str:
        return f"sum(rate({metric}{{{sel_}}}[{wc}]))"

    cgroup = [
        ("chaosbench_node_cpu_usage_seconds:rate", rate("container_cpu_usage_seconds_total"), "rate"),
        ("chaosbench_node_cpu_periods:rate", rate("container_cpu_cfs_periods_total"), "rate"),
        ("chaosbench_node_cpu_throttled_periods:rate", rate("container_cpu_cfs_throttled_periods_total"), "rate"),
        ("chaosbench_node_memory_usage_bytes", f"sum(container_memory_usage_bytes{{{pods}}})", "gauge"),
        ("chaosbench_node_memory_failcnt:rate", rate("container_memory_failcnt"), "rate"),
        ("chaosbench_node_memory_major_faults:rate",
         rate("container_memory_failures_total", f'{pods},failure_type="pgmajfault",scope="container"'), "rate"),
    ]
    for way in ("receive", "transmit"):  # pod network counters sit on the sandbox, not on a container
        cgroup += [(f"chaosbench_node_network_{way}_bytes:rate", rate(f"container_network_{way}_bytes_total", pod),
                    "rate"),
                   (f"chaosbench_node_network_{way}_packets:rate",
                    rate(f"container_network_{way}_packets_total", pod), "rate"),
                   (f"chaosbench_node_network_{way}_drop:rate",
                    rate(f"container_network_{way}_packets_dropped_total", pod), "rate")]
    return cgroup + [
        ("cpu:usage", f'1 - avg(rate(node_cpu_seconds_total{{mode="idle",{sel}}}[{w}]))', "gauge"),
        ("load1", f"max(node_load1{{{sel}}})", "gauge"),
        ("memory:available", f"max(node_memory_MemAvailable_bytes{{{sel}}})", "gauge"),
        ("cpu:pressure", f"max(rate(node_pressure_cpu_waiting_seconds_total{{{sel}}}[{w}]))", "rate"),
        ("memory:pressure", f"max(rate(node_pressure_memory_waiting_seconds_total{{{sel}}}[{w}]))", "rate"),
        ("io:pressure", f"max(rate(node_pressure_io_waiting_seconds_total{{{sel}}}[{w}]))", "rate"),
        ("pgmajfault:rate", f"max(rate(node_vmstat_pgmajfault{{{sel}}}[{w}]))", "rate"),
        ("network_transmit_bytes:rate", f"sum(rate(node_network_transmit_bytes_total{{{nic}}}[{w}]))", "rate"),
        ("network_receive_bytes:rate", f"sum(rate(node_network_receive_bytes_total{{{nic}}}[{w}]))", "rate"),
    ]


def _rank(s: K8sSettings, rank: int) -> list[tuple[str, str, str]]:
    # dcgm-exporter's UUID label names the GPU wherever it sits: no host index or Hostname assumed
    sel, w = 'UUID="{gpu_uuid}"', rate_window(s)
    out = [(m, f"max({m}{{{sel}}})", "gauge") for m in DCGM_GAUGES]
    out += [(f"{m.removesuffix('_TOTAL')}:rate", f"max(rate({m}{{{sel}}}[{w}]))", "rate") for m in DCGM_COUNTERS]
    return out


def column_queries(s: K8sSettings, scenario: Scenario) -> list[ColumnQuery]:
    """Every data.csv column of a k8s run and its query."""
    cols = [ColumnQuery(f"ingress_{m}", "ingress", q, k) for m, q, k in _ingress(s)]
    for node in s.node_names:
        cols += [ColumnQuery(f"{node}_{m}", node, q, k) for m, q, k in _node(s, node)]
    for r in range(s.world_size):
        cols += [ColumnQuery(f"rank-{r}_{m}", f"rank-{r}", q, k) for m, q, k in _rank(s, r)]
    cols += [ColumnQuery(f"{e.component}_{e.name}", e.component, f"sum({cluster_promql(s, e.query)})")
             for e in scenario.spec.telemetry.extra_metrics]
    return cols


_VLLM_NAME = re.compile(r"(?<![\w:])vllm:[a-zA-Z_:][a-zA-Z0-9_:]*")


def cluster_promql(s: K8sSettings, query: str) -> str:
    """A scenario's PromQL (steady-state probes, stop conditions, extra metrics) as it reads on the cluster:
    vLLM's metric names (``vllm:...``, as the local engine exports them) under Ray Serve LLM's naming."""
    return _VLLM_NAME.sub(lambda m: ray_metric_name(m.group(0)), query)


def component_node(placement: Placement, component: str) -> str | None:
    if component.startswith("node-"):
        return component
    if component.startswith("rank-"):
        return placement.node(int(component.split("-", 1)[1]))
    return None


# ----------------------------------------------------------------------------- metrics


def export_data_csv(prometheus_url: str, s: K8sSettings, queries: list[ColumnQuery], view: ClusterView,
                    start: float, end: float, out: Path, requests: list[RequestRecord] | None = None) -> int:
    """Range-query every column into ``out`` (data.csv) as the local collector does; returns the column count."""
    import pandas as pd

    from chaosbench.collect.prometheus import Column, fill_gaps, query_frame, sli_frame

    metric_of = {q.column: q.column.split("_", 1)[1] for q in queries}
    columns = [Column(metric_of[q.column], q.resolve(view, s), q.kind, component=q.component) for q in queries]
    start_s, end_s = int(start), int(end) + 1
    df, kinds = query_frame(prometheus_url, columns, start_s, end_s, s.step_s)
    index = pd.RangeIndex(start_s, end_s + 1, max(1, int(s.step_s)))
    df = df.reindex(index)
    if requests is not None:
        df = pd.concat([df, sli_frame(requests, index)], axis=1)
        kinds["ingress_error_rate"] = "rate"
    df = df.drop(columns=[c for c in df.columns if df[c].isna().all()])
    df, _ = fill_gaps(df, kinds)
    df = df[sorted(df.columns)].copy()  # one block: no fragmentation warning on the insert below
    df.insert(0, "time", df.index.astype(int))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(out)
    return len(df.columns) - 1


# ----------------------------------------------------------------------------- traces and logs

_RANK_IN_NAME = re.compile(r"rank[-_]?(\d+)", re.IGNORECASE)


def trace_rank(filename: str) -> int | None:
    """vLLM names each worker's trace after its rank (``...-rank-3.<ts>.pt.trace.json.gz``)."""
    m = _RANK_IN_NAME.search(filename)
    return int(m.group(1)) if m else None


def collect_traces(client: K8sClient, s: K8sSettings, dest: Path) -> list[Path]:
    """Copy every worker pod's profiler traces into ``dest`` as ``rank-<i>.json(.gz)``."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for pod in client.pods("chaosbench.io/role=worker"):
        listing = client.exec(pod.name, ["sh", "-c", f"ls -1 {PROFILER_DIR} 2>/dev/null || true"])
        for name in sorted(n for n in listing.stdout.split() if ".json" in n):
            rank = trace_rank(name)
            if rank is None:
                continue
            data = client.exec(pod.name, ["sh", "-c", f"base64 -w0 {PROFILER_DIR}/{name}"])
            suffix = ".json.gz" if name.endswith(".gz") else ".json"
            path = dest / f"rank-{rank}{suffix}"
            path.write_bytes(base64.b64decode(data.stdout))
            written.append(path)
    return written


def log_lines(text: str, component: str, start: float, end: float) -> list[tuple[float, str, str, str]]:
    """Pod log text (fetched with timestamps=True) as logs.csv rows, WARNING and up as locally.

    The Kubernetes timestamp gives the time; Ray's own line format (chaosbench.collect.logs)
    gives the level; a traceback line inherits ERROR as the local parser does.
    """
    from datetime import datetime

    from chaosbench.collect.logs import CPP_LEVEL, CPP_LINE, KEEP, PY_LINE

    rows = []
    for line in text.splitlines():
        stamp, _, message = line.partition(" ")
        try:
            t = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if not start <= t <= end:
            continue
        m = PY_LINE.match(message) or CPP_LINE.match(message)
        if m:
            level, text_ = CPP_LEVEL.get(m.group(3), m.group(3)), m.group(4)
        elif "Traceback" in message or re.search(r"\b\w*(Error|Exception)\b", message) or "NVRM: Xid" in message:
            level, text_ = "ERROR", message
        else:
            continue
        if level in KEEP:
            rows.append((t, component, level, text_.strip()))
    return rows


def export_logs_csv(client: K8sClient, start: float, end: float, out: Path) -> int:
    """logs.csv from the head (``ingress``) and worker pods (``node-<i>``); returns the line count."""
    import time

    rows = []
    since = max(1, int(time.time() - start) + 1)
    for pod in client.pods("app.kubernetes.io/part-of=chaosbench"):
        role = pod.labels.get("chaosbench.io/role")
        component = "ingress" if role == "head" else pod.labels.get("chaosbench.io/node")
        if component is None:
            continue
        rows.extend(log_lines(client.logs(pod.name, since_seconds=since), component, start, end))
    rows.sort()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "component", "level", "message"])
        for t, component, level, message in rows:
            w.writerow([f"{t:.3f}", component, level, message[:2000]])
    tmp.replace(out)
    return len(rows)
