"""Collection on a cluster: Prometheus range queries into data.csv, vLLM profiler traces, pod logs.

data.csv has the local backend's shape: a ``time`` column (unix seconds) and one
``<component>_<metric>`` column per series, components ``ingress``, ``node-<i>`` and
``rank-<i>`` (no ``_`` inside a component name: RCAEval splits on it). Each column
is one PromQL query aggregated to a single series; ``{k8s_node}`` in a query is the
Kubernetes node that carries the component, filled in from the node labels.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backends.k8s.settings import PROFILER_DIR, K8sSettings
from harness.errors import PreflightFailed

if TYPE_CHECKING:
    import pandas as pd

    from harness.backends.k8s.client import K8sClient


@dataclass(frozen=True)
class ColumnQuery:
    column: str  # <component>_<metric>
    component: str
    query: str  # PromQL, may contain {k8s_node}

    def to_json(self) -> dict[str, str]:
        return {"column": self.column, "component": self.component, "query": self.query}

    def resolve(self, node_map: dict[str, str], component_node: str | None) -> str:
        if "{k8s_node}" not in self.query:
            return self.query
        if component_node is None or component_node not in node_map:
            raise PreflightFailed(f"{self.column}: no Kubernetes node labelled {component_node}")
        return self.query.replace("{k8s_node}", node_map[component_node])


def _window(s: K8sSettings) -> str:
    return f"{max(5, round(4 * s.step_s))}s"


def _ingress(s: K8sSettings) -> list[tuple[str, str]]:
    p, w = f"{s.vllm_metric_prefix}vllm:", _window(s)

    def q(name: str, quantile: float) -> str:
        return f"histogram_quantile({quantile}, sum by (le) (rate({p}{name}_bucket[{w}])))"

    return [
        ("ttft_p50", q("time_to_first_token_seconds", 0.5)), ("ttft_p99", q("time_to_first_token_seconds", 0.99)),
        ("itl_p50", q("inter_token_latency_seconds", 0.5)), ("itl_p99", q("inter_token_latency_seconds", 0.99)),
        ("e2e_p50", q("e2e_request_latency_seconds", 0.5)), ("e2e_p99", q("e2e_request_latency_seconds", 0.99)),
        ("requests_running", f"sum({p}num_requests_running)"),
        ("requests_waiting", f"sum({p}num_requests_waiting)"),
        ("kv_cache_usage", f"avg({p}kv_cache_usage_perc)"),
        ("preemptions", f"sum(rate({p}num_preemptions_total[{w}]))"),
        ("success_rate", f"sum(rate({p}request_success_total[{w}]))"),
        ("generation_tokens", f"sum(rate({p}generation_tokens_total[{w}]))"),
    ]


def _node(s: K8sSettings, node: str) -> list[tuple[str, str]]:
    w, sel = _window(s), 'k8s_node="{k8s_node}"'
    pods = f'namespace="{s.namespace}",pod=~".*-{node}-worker-.*"'
    nic = f'{sel},device!~"lo|veth.*|cali.*|flannel.*|cni.*|docker.*"'
    return [
        ("cpu_util", f'1 - avg(rate(node_cpu_seconds_total{{mode="idle",{sel}}}[{w}]))'),
        ("cpu_psi", f"sum(rate(node_pressure_cpu_waiting_seconds_total{{{sel}}}[{w}]))"),
        ("mem_psi", f"sum(rate(node_pressure_memory_waiting_seconds_total{{{sel}}}[{w}]))"),
        ("mem_available", f"sum(node_memory_MemAvailable_bytes{{{sel}}})"),
        ("net_tx", f"sum(rate(node_network_transmit_bytes_total{{{nic}}}[{w}]))"),
        ("net_rx", f"sum(rate(node_network_receive_bytes_total{{{nic}}}[{w}]))"),
        ("pod_cpu", f"sum(rate(container_cpu_usage_seconds_total{{{pods}}}[{w}]))"),
        ("pod_throttled", f"sum(rate(container_cpu_cfs_throttled_periods_total{{{pods}}}[{w}]))"),
        ("pod_memory", f"sum(container_memory_working_set_bytes{{{pods}}})"),
    ]


def _rank(s: K8sSettings, rank: int) -> list[tuple[str, str]]:
    sel, w = f'Hostname="{{k8s_node}}",gpu="{s.rank_gpu(rank)}"', _window(s)
    gauges = {
        "sm_clock": "DCGM_FI_DEV_SM_CLOCK", "power_usage": "DCGM_FI_DEV_POWER_USAGE",
        "power_limit": "DCGM_FI_DEV_POWER_MGMT_LIMIT", "clock_events": "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
        "fb_used": "DCGM_FI_DEV_FB_USED", "gpu_util": "DCGM_FI_DEV_GPU_UTIL", "xid": "DCGM_FI_DEV_XID_ERRORS",
        "gr_active": "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "tensor_active": "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "pcie_tx": "DCGM_FI_PROF_PCIE_TX_BYTES", "pcie_rx": "DCGM_FI_PROF_PCIE_RX_BYTES",
        "nvlink_tx": "DCGM_FI_PROF_NVLINK_TX_BYTES", "nvlink_rx": "DCGM_FI_PROF_NVLINK_RX_BYTES",
    }
    out = [(name, f"max({metric}{{{sel}}})") for name, metric in gauges.items()]
    out.append(("power_violation", f"max(rate(DCGM_FI_DEV_POWER_VIOLATION{{{sel}}}[{w}]))"))
    out.append(("thermal_violation", f"max(rate(DCGM_FI_DEV_THERMAL_VIOLATION{{{sel}}}[{w}]))"))
    return out


def column_queries(s: K8sSettings, scenario) -> list[ColumnQuery]:
    """Every data.csv column of a k8s run and its query."""
    cols = [ColumnQuery(f"ingress_{m}", "ingress", q) for m, q in _ingress(s)]
    for node in s.node_names:
        cols += [ColumnQuery(f"{node}_{m}", node, q) for m, q in _node(s, node)]
    for r in range(s.world_size):
        cols += [ColumnQuery(f"rank-{r}_{m}", f"rank-{r}", q) for m, q in _rank(s, r)]
    cols += [ColumnQuery(f"{e.component}_{e.name}", e.component, e.query)
             for e in scenario.spec.telemetry.extra_metrics]
    return cols


def component_node(s: K8sSettings, component: str) -> str | None:
    if component.startswith("node-"):
        return component
    if component.startswith("rank-"):
        return s.rank_node(int(component.split("-", 1)[1]))
    return None


# ----------------------------------------------------------------------------- metrics


def query_metrics(prometheus, s: K8sSettings, queries: list[ColumnQuery], node_map: dict[str, str],
                  start: float, end: float) -> pd.DataFrame:
    """Range-query every column (``prometheus``: a prometheus_api_client.PrometheusConnect) into one frame."""
    import pandas as pd

    step = f"{s.step_s:g}s"
    frames = []
    for q in queries:
        promql = q.resolve(node_map, component_node(s, q.component))
        result = prometheus.custom_query_range(promql, start_time=_dt(start), end_time=_dt(end), step=step)
        frames.append(_series(q.column, result))
    grid = pd.DataFrame({"time": _grid(start, end, s.step_s)})
    for frame in frames:
        grid = grid.merge(frame, on="time", how="left")
    return grid


def _dt(t: float):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, tz=timezone.utc)


def _grid(start: float, end: float, step: float) -> list[float]:
    n = int((end - start) // step) + 1
    return [round(start + i * step, 3) for i in range(n)]


def _series(column: str, result: list[dict[str, Any]]) -> pd.DataFrame:
    """A range-query result (matrix) as (time, column); several series are summed."""
    import pandas as pd

    rows: dict[float, float] = {}
    for series in result:
        for t, v in series.get("values", []):
            value = float(v)
            if value == value:  # NaN from an empty histogram_quantile stays missing
                rows[round(float(t), 3)] = rows.get(round(float(t), 3), 0.0) + value
    return pd.DataFrame({"time": list(rows), column: list(rows.values())}, columns=["time", column])


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


_LEVEL = re.compile(r"\b(CRITICAL|FATAL|ERROR|WARNING|WARN|INFO|DEBUG)\b")


def log_rows(text: str, component: str) -> list[dict[str, Any]]:
    """Pod log lines (fetched with timestamps=True) as logs.csv rows."""
    from datetime import datetime

    rows = []
    for line in text.splitlines():
        stamp, _, message = line.partition(" ")
        try:
            t = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        m = _LEVEL.search(message)
        level = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(m.group(1), m.group(1)) if m else "INFO"
        rows.append({"time": round(t, 6), "component": component, "level": level, "message": message.strip()})
    return rows


def collect_logs(client: K8sClient, since_s: int) -> list[dict[str, Any]]:
    """Logs of the head (``ingress``) and worker pods (``node-<i>``) of the last ``since_s`` seconds."""
    rows = []
    for pod in client.pods("app.kubernetes.io/part-of=chaosbench"):
        role = pod.labels.get("chaosbench.io/role")
        component = "ingress" if role == "head" else pod.labels.get("chaosbench.io/node")
        if component is None:
            continue
        rows.extend(log_rows(client.logs(pod.name, since_seconds=since_s), component))
    return sorted(rows, key=lambda r: r["time"])
