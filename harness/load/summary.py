"""LLMPerf-style summary of the load records (load/requests.jsonl -> load/summary.json).

Quantiles (p50, p90, p95, p99, mean, min, max) of TTFT, ITL (all inter-token gaps),
TPOT (per request: (e2e - ttft) / (tokens - 1)) and E2E, in seconds; request and
token throughput over the load's wall time; error rate; goodput = requests per
second that succeeded AND met every SLO (ttft, tpot, e2e).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

import numpy as np


class RequestRecord(TypedDict):
    start: float
    ttft: float | None
    itl: list[float]
    e2e: float
    tokens: int
    prompt_tokens: int
    status: str  # ok | error
    code: int
    error: str | None


def read_requests(path: Path) -> list[RequestRecord]:
    out: list[RequestRecord] = []
    if not Path(path).is_file():
        return out
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a killed Locust can leave a torn last line
    return out


def quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {k: None for k in ("p50", "p90", "p95", "p99", "mean", "min", "max")}
    a = np.asarray(values, dtype=float)
    q = np.percentile(a, [50, 90, 95, 99])
    return {"p50": float(q[0]), "p90": float(q[1]), "p95": float(q[2]), "p99": float(q[3]),
            "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}


def tpot(rec: RequestRecord) -> float | None:
    if rec["ttft"] is None or rec["tokens"] < 2:
        return None
    return (rec["e2e"] - rec["ttft"]) / (rec["tokens"] - 1)


def meets_slo(rec: RequestRecord, slo: dict[str, float]) -> bool:
    if rec["status"] != "ok" or rec["ttft"] is None:
        return False
    t = tpot(rec)
    return rec["ttft"] <= slo["ttft"] and rec["e2e"] <= slo["e2e"] and (t is None or t <= slo["tpot"])


def summarize(records: list[RequestRecord], slo: dict[str, float], started_at: float | None = None) -> dict[str, Any]:
    ok = [r for r in records if r["status"] == "ok"]
    if records:
        t0 = started_at if started_at is not None else min(r["start"] for r in records)
        wall = max(max(r["start"] + r["e2e"] for r in records) - t0, 1e-9)
    else:
        wall = 0.0
    tokens = sum(r["tokens"] for r in ok)
    good = sum(1 for r in records if meets_slo(r, slo))
    per_req_tpot = [t for r in ok if (t := tpot(r)) is not None]
    return {
        "requests": len(records),
        "completed": len(ok),
        "errors": len(records) - len(ok),
        "error_rate": (len(records) - len(ok)) / len(records) if records else 0.0,
        "wall_time_s": wall,
        "throughput_rps": len(ok) / wall if wall else 0.0,
        "output_tokens": tokens,
        "output_throughput_tps": tokens / wall if wall else 0.0,
        "goodput_rps": good / wall if wall else 0.0,
        "slo_attainment": good / len(records) if records else 0.0,
        "slo": dict(slo),
        "ttft_s": quantiles([r["ttft"] for r in ok if r["ttft"] is not None]),
        "itl_s": quantiles([g for r in ok for g in r["itl"]]),
        "tpot_s": quantiles(per_req_tpot),
        "e2e_s": quantiles([r["e2e"] for r in ok]),
        "error_examples": sorted({r["error"] for r in records if r["error"]})[:5],
    }
