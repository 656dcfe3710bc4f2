"""Collection from a cluster into the case directory's files, against recorded responses."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from chaosbench.backends.k8s import collect
from chaosbench.backends.k8s.client import ExecResult, PodRef
from chaosbench.backends.k8s.placement import from_located
from chaosbench.backends.k8s.settings import from_scenario
from chaosbench.errors import PreflightFailed
from chaosbench.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]
RECORDED = Path(__file__).parent / "recorded"
NODE_MAP = {"node-0": "gpu-a-17", "node-1": "gpu-b-03"}
T0 = 1763787600


def _settings(name: str = "gpu-clock-lock"):
    scenario = load_scenario(REPO / "scenarios" / f"{name}.yaml")
    return from_scenario(scenario), scenario


def _view(s):
    """What a run learns from the cluster: node labels, worker pods by label, the agents' GPU placement."""
    located = {n: {"workers": [{"uuid": f"GPU-{n}-{i}", "index": i, "bus_id": f"0000:{i:02x}:00.0"} for i in range(2)],
                   "engines": int(n == "node-0")} for n in NODE_MAP}
    return collect.ClusterView(NODE_MAP, {"node-0": ["cb-x-0-wrk-aaaa"], "node-1": ["cb-x-1-wrk-bbbb"]},
                               from_located(s, located, {}))


def test_queries_resolve_to_the_component_node():
    s, scenario = _settings()
    view = _view(s)
    queries = {q.column: q for q in collect.column_queries(s, scenario)}
    q = queries["rank-2_DCGM_FI_DEV_SM_CLOCK"]
    assert q.resolve(view, s) == 'max(DCGM_FI_DEV_SM_CLOCK{UUID="GPU-node-1-0"})'
    q = queries["node-0_cpu:pressure"]
    assert 'k8s_node="gpu-a-17"' in q.resolve(view, s)
    cpu = queries["node-1_chaosbench_node_cpu_usage_seconds:rate"].resolve(view, s)
    assert 'pod=~"cb\\-x\\-1\\-wrk\\-bbbb"' in cpu and "[40s]" in cpu  # cAdvisor: 4 samples of 10 s
    p95 = queries["ingress_vllm:time_to_first_token_seconds:p95"].query
    assert "ray_vllm_time_to_first_token_seconds_bucket" in p95
    with pytest.raises(PreflightFailed, match="node-1"):
        queries["node-1_load1"].resolve(collect.ClusterView({"node-0": "gpu-a-17"}), s)
    with pytest.raises(PreflightFailed, match="GPU is not known"):
        queries["rank-2_DCGM_FI_DEV_SM_CLOCK"].resolve(collect.ClusterView(NODE_MAP), s)


def test_column_names_match_the_local_collector_style():
    s, scenario = _settings()
    cols = [q.column for q in collect.column_queries(s, scenario)]
    assert "ingress_vllm:num_requests_running" in cols
    assert "ingress_vllm:request_success:rate" in cols  # counters: _total dropped, :rate added
    assert "rank-0_DCGM_FI_DEV_POWER_VIOLATION:rate" in cols
    # the node's processes: the local exporter's metric names (harness/backends/local/exporter.py)
    assert "node-1_chaosbench_node_cpu_throttled_periods:rate" in cols
    assert "node-0_chaosbench_node_network_transmit_bytes:rate" in cols
    assert all("_" not in c.split("_", 1)[0] for c in cols)


class FakeProm:
    """prometheus_api_client.PrometheusConnect.custom_query_range replaying recorded matrices."""

    def __init__(self):
        self.queries: list[str] = []

    def custom_query_range(self, query, start_time, end_time, step):
        self.queries.append(query)
        name = "prom_matrix_sm_clock.json" if "SM_CLOCK" in query else \
            "prom_matrix_ttft.json" if "time_to_first_token_seconds_bucket" in query else None
        if name is None:
            return []
        return json.loads((RECORDED / name).read_text())["data"]["result"]


def test_export_data_csv_from_recorded_prometheus(tmp_path: Path, monkeypatch):
    import chaosbench.collect.prometheus as prom

    fake = FakeProm()
    monkeypatch.setattr(prom, "_prom", lambda url: fake)
    s, scenario = _settings()
    queries = [q for q in collect.column_queries(s, scenario)
               if q.column in ("rank-2_DCGM_FI_DEV_SM_CLOCK", "ingress_vllm:time_to_first_token_seconds:p95",
                               "node-1_load1")]
    requests = [{"start": T0 + 1.0, "e2e": 0.5, "status": "ok"}, {"start": T0 + 4.0, "e2e": 1.5, "status": "error"}]
    n = collect.export_data_csv("http://prom.invalid", s, queries, _view(s), T0, T0 + 8, tmp_path / "data.csv",
                                requests)
    df = pd.read_csv(tmp_path / "data.csv")
    assert list(df.columns) == ["time", "ingress_error_rate", "ingress_latency",
                                "ingress_vllm:time_to_first_token_seconds:p95", "rank-2_DCGM_FI_DEV_SM_CLOCK"]
    assert n == 4  # node-1_load1 had no sample at all: dropped, as locally
    assert df["time"].tolist() == list(range(T0, T0 + 10))
    clock = df.set_index("time")["rank-2_DCGM_FI_DEV_SM_CLOCK"]
    assert clock[T0 + 3] == 495 and clock[T0 + 4] == 495 and clock[T0 + 7] == 1980  # short gap forward-filled
    assert not df.isna().any().any()
    assert any('UUID="GPU-node-1-0"' in q for q in fake.queries)


def test_log_lines_keep_warnings_and_errors_in_the_window():
    text = (RECORDED / "head_log.txt").read_text()
    start = pd.Timestamp("2026-11-22T05:00:00Z").timestamp()
    rows = collect.log_lines(text, "ingress", start, start + 300)
    assert [r[2] for r in rows] == ["WARNING", "ERROR", "ERROR", "ERROR"]
    assert rows[0][3].startswith("proxy.py:900 -- Request 9f3 timed out")
    assert rows[1][3].startswith("(raylet) node_manager.cc")
    assert all(r[1] == "ingress" and start <= r[0] <= start + 300 for r in rows)


class TraceCluster:
    def __init__(self, files: dict[str, dict[str, bytes]]):
        self.files = files

    def pods(self, selector):
        return [PodRef(name, "n", "Running", True, {}) for name in self.files]

    def exec(self, pod, argv, container=None, timeout_s=120):
        cmd = argv[-1]
        if cmd.startswith("ls"):
            return ExecResult("\n".join(self.files[pod]), "", 0)
        name = cmd.rsplit("/", 1)[1]
        return ExecResult(base64.b64encode(self.files[pod][name]).decode(), "", 0)


def test_traces_are_copied_per_rank(tmp_path: Path):
    s, _ = _settings()
    trace = gzip.compress(json.dumps({"traceEvents": [{"name": "x", "ph": "X", "ts": 1, "dur": 2}]}).encode())
    cluster = TraceCluster({
        "w0": {"vllm-instance-ab12-rank-0.1763787600.pt.trace.json.gz": trace,
               "vllm-instance-ab12-rank-1.1763787600.pt.trace.json.gz": trace, "notes.txt": b""},
        "w1": {"vllm-instance-ab12-rank-2.1763787600.pt.trace.json.gz": trace,
               "vllm-instance-ab12-rank-3.1763787600.pt.trace.json.gz": trace},
    })
    written = collect.collect_traces(cluster, s, tmp_path / "traces")
    assert [p.name for p in written] == [f"rank-{i}.json.gz" for i in range(4)]
    assert json.loads(gzip.decompress((tmp_path / "traces" / "rank-3.json.gz").read_bytes()))["traceEvents"]


def test_trace_rank_from_name():
    assert collect.trace_rank("host_123.rank-7.pt.trace.json") == 7
    assert collect.trace_rank("worker_rank3.json.gz") == 3
    assert collect.trace_rank("something.json") is None
