"""Prometheus -> data.csv in RCAEval's wide format.

One row per second (``time``, unix seconds, from the load start to its end) and
one column per ``<component>_<metric>``. Components are named as an operator
sees them: ``ingress`` (the API: vllm:* metrics, plus the client-side SLIs),
``node-<i>`` (the node's cgroups and veth, from the testbed's exporter),
``rank-<i>`` (the emulated device's DCGM_* metrics and the rank's step and
all-reduce histograms). The machine that runs the whole testbed (``host``, from
node-exporter) is no component of the system under test: its columns go to a
separate health file (``health_path``, for the harness), never to data.csv. A
component name never contains ``_`` (RCAEval splits on it); the metric part
keeps Prometheus' name, ``:`` included, with a suffix saying how it was derived:

    <c>_<gauge>                gauge value (averaged over the component's series)
    <c>_<counter>:rate         per-second rate over 5 s (``_total`` dropped)
    <c>_<histogram>:mean       rate(sum) / rate(count) over 5 s
    <c>_<histogram>:p95        histogram_quantile(0.95) over 5 s
    <c>_<histogram>:rate       observations per second
    host_cpu:usage, host_load1, host_memory:available, host_{cpu,memory,io}:pressure, host_pgmajfault:rate
                               (health file only)
    ingress_latency            mean client-observed E2E latency (s) of requests ending in the last 5 s
    ingress_error_rate         share of requests ending in the last 5 s that failed
    <c>_<name>                 a scenario's ``telemetry.extra_metrics`` entry (its query, summed)

Every series carrying a ``component`` label is exported (labels other than
``component`` are aggregated away, so a label value can never leak a fault).
No gaps: short gaps (<= 5 s) are forward-filled; longer ones are filled with 0
for rates and with the last value for gauges; the number of filled cells is
returned in ``ExportReport``. Columns with no sample at all are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from prometheus_api_client import PrometheusConnect

    from chaosbench.load.summary import RequestRecord

RATE_WINDOW = "5s"
SKIP_PREFIXES = ("python_", "scrape_", "up", "promhttp_", "process_start_time", "process_max_fds",
                 "process_virtual_memory_max")
HOST_QUERIES = {
    "cpu:usage": '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[5s]))',
    "load1": "node_load1",
    "memory:available": "node_memory_MemAvailable_bytes",
    "cpu:pressure": "rate(node_pressure_cpu_waiting_seconds_total[5s])",
    "memory:pressure": "rate(node_pressure_memory_waiting_seconds_total[5s])",
    "io:pressure": "rate(node_pressure_io_waiting_seconds_total[5s])",
    "pgmajfault:rate": "rate(node_vmstat_pgmajfault[5s])",
}
SHORT_GAP_S = 5
HOST = "host"  # the testbed machine's component name: its columns are testbed health, not data


@dataclass(frozen=True)
class Column:
    name: str  # the metric part of the column name
    query: str  # PromQL returning one series per component (label ``component``), or one series
    kind: str  # gauge | rate
    component: str | None = None  # fixed component for single-series queries


@dataclass(frozen=True)
class ExportReport:
    rows: int
    columns: int
    filled_cells: int
    dropped_columns: tuple[str, ...] = ()
    components: tuple[str, ...] = field(default_factory=tuple)


def _prom(url: str) -> PrometheusConnect:
    from prometheus_api_client import PrometheusConnect

    return PrometheusConnect(url=url, disable_ssl=True)


def discover(url: str, start: float, end: float) -> dict[str, str]:
    """Metric name -> type (gauge|counter|histogram|...) for every series with a ``component`` label."""
    import httpx

    series = httpx.get(f"{url}/api/v1/series", params={"match[]": '{component!="",job!="host"}',
                                                        "start": start, "end": end}, timeout=30).json()["data"]
    meta = httpx.get(f"{url}/api/v1/metadata", timeout=30).json().get("data", {})
    names = {s["__name__"] for s in series}
    out: dict[str, str] = {}
    for name in sorted(names):
        if name.startswith(SKIP_PREFIXES) or name.endswith("_created"):
            continue
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)] if name.endswith(suffix) else None
            if base and meta.get(base, [{}])[0].get("type") == "histogram":
                out[base] = "histogram"
                break
        else:
            kind = meta.get(name, [{}])[0].get("type")
            if kind is None:
                kind = "counter" if name.endswith("_total") else "gauge"
            out[name] = kind
    return out


def columns_for(metrics: dict[str, str]) -> list[Column]:
    cols: list[Column] = []
    sel = '{component!="",job!="host"}'
    for name, kind in metrics.items():
        if kind == "histogram":
            rate_sum = f"sum by (component) (rate({name}_sum{sel}[{RATE_WINDOW}]))"
            rate_count = f"sum by (component) (rate({name}_count{sel}[{RATE_WINDOW}]))"
            cols += [Column(f"{name}:mean", f"{rate_sum} / {rate_count}", "gauge"),
                     Column(f"{name}:p95", f"histogram_quantile(0.95, sum by (component, le) "
                                           f"(rate({name}_bucket{sel}[{RATE_WINDOW}])))", "gauge"),
                     Column(f"{name}:rate", rate_count, "rate")]
        elif kind == "counter":
            base = name[: -len("_total")] if name.endswith("_total") else name
            cols.append(Column(f"{base}:rate", f"sum by (component) (rate({name}{sel}[{RATE_WINDOW}]))", "rate"))
        else:
            cols.append(Column(name, f"avg by (component) ({name}{sel})", "gauge"))
    cols += [Column(n, q, "rate" if "rate(" in q else "gauge", component=HOST) for n, q in HOST_QUERIES.items()]
    return cols


def query_frame(url: str, columns: list[Column], start: float, end: float,
                step: float) -> tuple[pd.DataFrame, dict[str, str]]:
    """Range-query every column; a DataFrame indexed by integer unix second."""
    import pandas as pd

    prom = _prom(url)
    t0 = datetime.fromtimestamp(start, tz=timezone.utc)
    t1 = datetime.fromtimestamp(end, tz=timezone.utc)
    data: dict[str, pd.Series] = {}
    kinds: dict[str, str] = {}
    for col in columns:
        for series in prom.custom_query_range(col.query, start_time=t0, end_time=t1, step=f"{step:g}"):
            comp = col.component or series["metric"].get("component")
            if not comp or "_" in comp:
                continue
            values = {int(round(float(t))): float(v) for t, v in series["values"]}
            key = f"{comp}_{col.name}"
            data[key] = pd.Series(values, dtype=float).combine_first(data[key]) if key in data else \
                pd.Series(values, dtype=float)
            kinds[key] = col.kind
    return pd.DataFrame(data), kinds


def fill_gaps(df: pd.DataFrame, kinds: dict[str, str]) -> tuple[pd.DataFrame, int]:
    """Forward-fill short gaps, then long ones (0 for rates, last value for gauges). Returns (df, filled cells)."""
    import numpy as np

    before = int(df.isna().sum().sum())
    df = df.replace([np.inf, -np.inf], np.nan).ffill(limit=SHORT_GAP_S)
    for col in df.columns:
        if kinds.get(col) == "rate":
            df[col] = df[col].fillna(0.0)
        else:
            df[col] = df[col].ffill().bfill()
    return df, before - int(df.isna().sum().sum())


def sli_frame(requests: Sequence[RequestRecord], index: pd.Index, window_s: float = 5.0) -> pd.DataFrame:
    """ingress_latency and ingress_error_rate per second, from the client's request records."""
    import numpy as np
    import pandas as pd

    ends = np.array([r["start"] + r["e2e"] for r in requests], dtype=float)
    e2e = np.array([r["e2e"] for r in requests], dtype=float)
    err = np.array([r["status"] != "ok" for r in requests], dtype=float)
    lat, rate = [], []
    for t in index:
        m = (ends > t - window_s) & (ends <= t)
        ok = m & (err == 0)
        lat.append(float(e2e[ok].mean()) if ok.any() else np.nan)
        rate.append(float(err[m].mean()) if m.any() else 0.0)
    return pd.DataFrame({"ingress_latency": lat, "ingress_error_rate": rate}, index=index)


def export_data_csv(url: str, start: float, end: float, out: Path, *, step: float = 1.0,
                    requests: Sequence[RequestRecord] | None = None,
                    extra: list[Column] | None = None, health_path: Path | None = None) -> ExportReport:
    """data.csv at ``out``; the testbed machine's own ``host_*`` columns go to ``health_path`` (when given)."""
    import pandas as pd

    start_s, end_s = int(start), int(end) + 1
    columns = columns_for(discover(url, start_s, end_s)) + list(extra or [])
    df, kinds = query_frame(url, columns, start_s, end_s, step)
    index = pd.RangeIndex(start_s, end_s + 1, max(1, int(step)))
    df = df.reindex(index)
    if requests is not None:
        sli = sli_frame(requests, index)
        df = pd.concat([df, sli], axis=1)
        kinds["ingress_error_rate"] = "rate"
    empty = tuple(c for c in df.columns if df[c].isna().all())
    df = df.drop(columns=list(empty))
    df, filled = fill_gaps(df, kinds)
    df = pd.concat([pd.DataFrame({"time": df.index.astype(int)}, index=df.index), df[sorted(df.columns)]], axis=1)
    health = [c for c in df.columns if c.startswith(f"{HOST}_")]
    if health_path is not None:
        _write_csv(df[["time", *health]], health_path)
    df = df.drop(columns=health)
    _write_csv(df, out)
    comps = tuple(sorted({c.split("_", 1)[0] for c in df.columns if c != "time"}))
    return ExportReport(rows=len(df), columns=len(df.columns) - 1, filled_cells=filled, dropped_columns=empty,
                        components=comps)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)
