"""Collection on a cluster: Prometheus range queries into data.csv, vLLM profiler traces, pod logs.

data.csv has the local backend's shape and names (harness/collect/prometheus.py): a
``time`` column (unix seconds, one row per step) and ``<component>_<metric>`` columns,
components ``ingress``, ``node-<i>`` and ``rank-<i>``; metric parts keep Prometheus'
names with the same derivation suffixes (``:rate``, ``:mean``, ``:p95``), so a
detector sees one shape on both backends. Each column is one PromQL query reduced to
a single series; ``{k8s_node}`` in a query is the Kubernetes node that carries the
component, filled in from the node labels. Querying, gap filling and the client-side
SLIs reuse harness.collect.prometheus.
"""

from __future__ import annotations

import base64
import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backends.k8s.settings import PROFILER_DIR, K8sSettings
from harness.errors import PreflightFailed

if TYPE_CHECKING:
    from harness.backends.k8s.client import K8sClient

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


@dataclass(frozen=True)
class ColumnQuery:
    column: str  # <component>_<metric>
    component: str
    query: str  # PromQL, may contain {k8s_node}
    kind: str = "gauge"  # gauge | rate (how gaps are filled)

    def to_json(self) -> dict[str, str]:
        return {"column": self.column, "component": self.component, "query": self.query, "kind": self.kind}

    def resolve(self, node_map: dict[str, str], component_node: str | None) -> str:
        if "{k8s_node}" not in self.query:
            return self.query
        if component_node is None or component_node not in node_map:
            raise PreflightFailed(f"{self.column}: no Kubernetes node labelled {component_node}")
        return self.query.replace("{k8s_node}", node_map[component_node])


def _window(s: K8sSettings) -> str:
    return f"{max(5, round(4 * s.step_s))}s"


def _ingress(s: K8sSettings) -> list[tuple[str, str, str]]:
    p, w = f"{s.vllm_metric_prefix}vllm:", _window(s)
    out = []
    for h in VLLM_HISTOGRAMS:
        rate_sum, rate_count = f"sum(rate({p}{h}_sum[{w}]))", f"sum(rate({p}{h}_count[{w}]))"
        out += [(f"vllm:{h}:mean", f"{rate_sum} / {rate_count}", "gauge"),
                (f"vllm:{h}:p95", f"histogram_quantile(0.95, sum by (le) (rate({p}{h}_bucket[{w}])))", "gauge"),
                (f"vllm:{h}:rate", rate_count, "rate")]
    out += [(f"vllm:{g}", f"{agg}({p}{g})", "gauge") for g, agg in VLLM_GAUGES.items()]
    out += [(f"vllm:{c.removesuffix('_total')}:rate", f"sum(rate({p}{c}[{w}]))", "rate") for c in VLLM_COUNTERS]
    return out


def _node(s: K8sSettings, node: str) -> list[tuple[str, str, str]]:
    """The node as a host (node-exporter, named like the local ``host_*`` columns) and its Ray worker
    pod as the node's processes (cAdvisor, named like the local exporter's ``chaosbench_node_*``)."""
    w, sel = _window(s), 'k8s_node="{k8s_node}"'
    pod = f'namespace="{s.namespace}",pod=~".*-{node}-worker-.*"'
    pods = f'{pod},container!=""'
    nic = f'{sel},device!~"lo|veth.*|cali.*|flannel.*|cni.*|docker.*"'

    def rate(metric: str, sel_: str = pods) -> str:
        return f"sum(rate({metric}{{{sel_}}}[{w}]))"

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
        ("network_transmit_bytes:rate", rate("node_network_transmit_bytes_total", nic), "rate"),
        ("network_receive_bytes:rate", rate("node_network_receive_bytes_total", nic), "rate"),
    ]


def _rank(s: K8sSettings, rank: int) -> list[tuple[str, str, str]]:
    sel, w = f'Hostname="{{k8s_node}}",gpu="{s.rank_gpu(rank)}"', _window(s)
    out = [(m, f"max({m}{{{sel}}})", "gauge") for m in DCGM_GAUGES]
    out += [(f"{m.removesuffix('_TOTAL')}:rate", f"max(rate({m}{{{sel}}}[{w}]))", "rate") for m in DCGM_COUNTERS]
    return out


def column_queries(s: K8sSettings, scenario) -> list[ColumnQuery]:
    """Every data.csv column of a k8s run and its query."""
    cols = [ColumnQuery(f"ingress_{m}", "ingress", q, k) for m, q, k in _ingress(s)]
    for node in s.node_names:
        cols += [ColumnQuery(f"{node}_{m}", node, q, k) for m, q, k in _node(s, node)]
    for r in range(s.world_size):
        cols += [ColumnQuery(f"rank-{r}_{m}", f"rank-{r}", q, k) for m, q, k in _rank(s, r)]
    cols += [ColumnQuery(f"{e.component}_{e.name}", e.component, f"sum({cluster_promql(s, e.query)})")
             for e in scenario.spec.telemetry.extra_metrics]
    return cols


_VLLM_NAME = re.compile(r"(?<![\w:])vllm:")


def cluster_promql(s: K8sSettings, query: str) -> str:
    """A scenario's PromQL (steady-state probes, stop conditions, extra metrics) as it reads on the cluster:
    vLLM's metric names (``vllm:...``, as the local engine exports them) carry Ray's re-export prefix."""
    return _VLLM_NAME.sub(f"{s.vllm_metric_prefix}vllm:", query)


def component_node(s: K8sSettings, component: str) -> str | None:
    if component.startswith("node-"):
        return component
    if component.startswith("rank-"):
        return s.rank_node(int(component.split("-", 1)[1]))
    return None


# ----------------------------------------------------------------------------- metrics


def export_data_csv(prometheus_url: str, s: K8sSettings, queries: list[ColumnQuery], node_map: dict[str, str],
                    start: float, end: float, out: Path, requests: list[dict[str, Any]] | None = None) -> int:
    """Range-query every column into ``out`` (data.csv) as the local collector does; returns the column count."""
    import pandas as pd

    from harness.collect.prometheus import Column, fill_gaps, query_frame, sli_frame

    metric_of = {q.column: q.column.split("_", 1)[1] for q in queries}
    columns = [Column(metric_of[q.column], q.resolve(node_map, component_node(s, q.component)), q.kind,
                      component=q.component) for q in queries]
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

    The Kubernetes timestamp gives the time; Ray's own line format (harness.collect.logs)
    gives the level; a traceback line inherits ERROR as the local parser does.
    """
    from datetime import datetime

    from harness.collect.logs import CPP_LEVEL, CPP_LINE, KEEP, PY_LINE

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
