from __future__ import annotations

import shutil
import socket
import subprocess
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from chaosbench.collect.prometheus import export_data_csv, fill_gaps, sli_frame

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tiny_exporters():
    """Two prometheus_client exporters in this process: an 'ingress' and a 'rank-0'."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

    regs, servers, ports = [], [], []
    for _ in range(2):
        reg = CollectorRegistry()
        server, _t = start_http_server(0, addr="127.0.0.1", registry=reg)
        regs.append(reg), servers.append(server), ports.append(server.server_port)
    ingress, rank = regs
    hist = Histogram("vllm:e2e_request_latency_seconds", "e2e", ["model_name"], registry=ingress).labels("m")
    ctr = Counter("vllm:request_success", "ok", ["finished_reason"], registry=ingress)
    clock = Gauge("DCGM_FI_DEV_SM_CLOCK", "clock", registry=rank)
    yield ports, hist, ctr, clock
    for s in servers:
        s.shutdown()


@pytest.mark.slow
def test_export_against_real_prometheus(tmp_path, tiny_exporters):
    ports, hist, ctr, clock = tiny_exporters
    prom_port = _free_port()
    (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: engine
    static_configs:
      - targets: ["127.0.0.1:{ports[0]}"]
        labels: {{component: ingress}}
      - targets: ["127.0.0.1:{ports[1]}"]
        labels: {{component: rank-0}}
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: "vllm_(.+)"
        target_label: __name__
        replacement: "vllm:$1"
""")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path}/prometheus.yml",
                             f"--storage.tsdb.path={tmp_path}/data", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.time() + 30
        while time.time() < deadline:  # until both targets have been scraped once
            try:
                active = httpx.get(f"{url}/api/v1/targets").json()["data"]["activeTargets"]
                if len(active) == 2 and all(t["health"] == "up" for t in active):
                    break
            except (httpx.HTTPError, ValueError):  # "Service Unavailable" while it starts
                pass
            time.sleep(0.3)
        start = time.time()
        for i in range(8):
            hist.observe(0.5 + 0.1 * i)
            ctr.labels("stop").inc()
            clock.set(1980 - 100 * i)
            time.sleep(1)
        end = time.time()
        time.sleep(1.5)
        requests = [{"start": start + 1, "e2e": 2.0, "status": "ok"}, {"start": start + 2, "e2e": 1.0,
                                                                      "status": "error"}]
        report = export_data_csv(url, start, end, tmp_path / "data.csv", requests=requests)
        health = httpx.get(f"{url}/api/v1/targets").json()["data"]["activeTargets"]
    finally:
        proc.terminate()
        proc.wait(10)
    assert all(t["health"] == "up" for t in health)
    df = pd.read_csv(tmp_path / "data.csv")
    assert df.columns[0] == "time" and df["time"].diff().dropna().eq(1).all()
    assert not df.isna().any().any()
    cols = set(df.columns)
    assert {"rank-0_DCGM_FI_DEV_SM_CLOCK", "ingress_vllm:request_success:rate",
            "ingress_vllm:e2e_request_latency_seconds:mean", "ingress_latency", "ingress_error_rate"} <= cols
    assert all("_" not in c.split("_", 1)[0] for c in cols if c != "time")
    clock_col = df["rank-0_DCGM_FI_DEV_SM_CLOCK"]
    assert clock_col.max() >= 1780 and clock_col.min() <= 1400, "the gauge moves as it was set"
    assert df["ingress_vllm:request_success:rate"].max() > 0.3
    assert report.rows == len(df) and "rank-0" in report.components and "ingress" in report.components
    assert not any("finished_reason" in c or "stop" in c for c in cols), "labels other than component are dropped"


def test_fill_gaps_short_and_long():
    df = pd.DataFrame({"a_g": [1.0, np.nan, 3.0] + [np.nan] * 8, "a_r:rate": [np.nan, 1.0] + [np.nan] * 9})
    out, filled = fill_gaps(df, {"a_g": "gauge", "a_r:rate": "rate"})
    assert not out.isna().any().any()
    assert out["a_g"].tolist() == [1.0, 1.0] + [3.0] * 9
    assert out["a_r:rate"].tolist()[:7] == [0.0] + [1.0] * 6 and out["a_r:rate"].tolist()[7:] == [0.0] * 4
    assert filled == int(df.isna().sum().sum())


def test_sli_frame_windows():
    reqs = [{"start": 100.0, "e2e": 2.0, "status": "ok"}, {"start": 101.0, "e2e": 4.0, "status": "ok"},
            {"start": 104.0, "e2e": 1.0, "status": "error"}]
    sli = sli_frame(reqs, pd.RangeIndex(100, 112))
    assert np.isnan(sli.loc[101, "ingress_latency"])
    assert sli.loc[102, "ingress_latency"] == 2.0 and sli.loc[105, "ingress_latency"] == 3.0
    assert sli.loc[105, "ingress_error_rate"] == pytest.approx(1 / 3)
    assert sli.loc[111, "ingress_error_rate"] == 0.0


def test_host_columns_go_to_the_health_file_only(tmp_path, monkeypatch):
    """The machine running the testbed is no component: its host_* columns never reach data.csv."""
    import chaosbench.collect.prometheus as prom

    frame = pd.DataFrame({"rank-0_DCGM_FI_DEV_SM_CLOCK": [1980.0, 1965.0, 1980.0],
                          "host_load1": [1.0, 2.0, 3.0], "host_cpu:usage": [0.5, 0.6, 0.7]}, index=[100, 101, 102])
    monkeypatch.setattr(prom, "discover", lambda url, start, end: {})
    monkeypatch.setattr(prom, "query_frame", lambda url, cols, start, end, step: (frame.copy(), {}))
    health = tmp_path / "labels" / "testbed_health.csv"
    report = export_data_csv("http://unused", 100, 101, tmp_path / "data.csv", health_path=health)
    data = pd.read_csv(tmp_path / "data.csv")
    assert list(data.columns) == ["time", "rank-0_DCGM_FI_DEV_SM_CLOCK"]
    assert report.components == ("rank-0",)
    kept = pd.read_csv(health)
    assert list(kept.columns) == ["time", "host_cpu:usage", "host_load1"] and kept["host_load1"].tolist() == [1, 2, 3]
    export_data_csv("http://unused", 100, 101, tmp_path / "plain.csv")  # no health file: dropped all the same
    assert not any(c.startswith("host_") for c in pd.read_csv(tmp_path / "plain.csv").columns)
