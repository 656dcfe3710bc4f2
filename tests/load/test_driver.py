from __future__ import annotations

import json

import pytest

from chaosbench.load.driver import LoadConfig, start_load
from chaosbench.load.summary import meets_slo, summarize


def _config(url: str, **kw) -> LoadConfig:
    base = dict(api_url=url, model="m", users=2, spawn_rate=10.0, arrival="poisson", qps=8.0, prompt_tokens=8,
                output_tokens=6, streaming=True, duration=4.0, seed=3, max_requests=10_000,
                slo={"ttft": 1.0, "tpot": 0.5, "e2e": 5.0})
    return LoadConfig(**{**base, **kw})


@pytest.mark.slow
def test_locust_records_streaming_requests(tmp_path, sse_server):
    run = start_load(_config(sse_server), tmp_path)
    started = run.wait_started()
    summary = run.finish(timeout_s=60)
    records = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert len(records) >= 10, "about 8 qps for 4 s"
    ok = [r for r in records if r["status"] == "ok"]
    bad = [r for r in records if r["status"] == "error"]
    assert bad and all(r["code"] == 500 for r in bad)
    assert all(r["tokens"] == 6 and len(r["itl"]) == 5 and 0 < r["ttft"] <= r["e2e"] for r in ok)
    assert all(r["start"] >= started - 1 for r in records)
    assert summary["requests"] == len(records) and summary["errors"] == len(bad)
    assert summary["ttft_s"]["p50"] > 0 and summary["e2e_s"]["p99"] >= summary["e2e_s"]["p50"]
    assert (tmp_path / "locust_stats.csv").is_file()
    assert "TTFT" in (tmp_path / "locust_stats.csv").read_text()


def test_summary_goodput_and_slo():
    recs = [
        {"start": 0.0, "ttft": 0.1, "itl": [0.1], "e2e": 0.2, "tokens": 2, "prompt_tokens": 1, "status": "ok",
         "code": 200, "error": None},
        {"start": 1.0, "ttft": 3.0, "itl": [0.1], "e2e": 3.1, "tokens": 2, "prompt_tokens": 1, "status": "ok",
         "code": 200, "error": None},
        {"start": 1.0, "ttft": None, "itl": [], "e2e": 1.0, "tokens": 0, "prompt_tokens": 1, "status": "error",
         "code": 500, "error": "HTTP 500"},
    ]
    slo = {"ttft": 2.0, "tpot": 0.5, "e2e": 5.0}
    assert [meets_slo(r, slo) for r in recs] == [True, False, False]
    s = summarize(recs, slo, started_at=0.0)
    assert s["requests"] == 3 and s["errors"] == 1 and s["error_rate"] == pytest.approx(1 / 3)
    assert s["wall_time_s"] == pytest.approx(4.1)
    assert s["goodput_rps"] == pytest.approx(1 / 4.1)
    assert s["ttft_s"]["max"] == 3.0 and s["tpot_s"]["mean"] == pytest.approx(0.1)
    assert summarize([], slo)["requests"] == 0
