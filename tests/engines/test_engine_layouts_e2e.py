"""End to end on a real local Ray: 2 data-parallel replicas x 2 pipeline stages x 1 tensor-parallel rank.

Deploys the layout on two emulated nodes, spreads requests over the Serve replicas, opens a trace window on
every replica, scrapes the per-replica and per-rank exporters, fails a rank of replica 1 (only that replica
restarts) and shuts down. Needs a free machine: it starts its own Ray and Serve (slow; not on a shared testbed).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from ray_engine import complete, metrics, running_engine, scenario

from chaosbench.backends.base import DeviceControl

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def engine():
    with running_engine(scenario(nodes=2, tensor_parallel=1, data_parallel=2, pipeline_parallel=2)) as running:
        yield running



def test_targets_and_ranks_name_the_layout(engine) -> None:
    assert sorted(c for c, _ in engine.handle.metrics_targets) == ["rank-0", "rank-1", "rank-2", "rank-3",
                                                                   "replica-0", "replica-1"]
    ranks = httpx.get(f"{engine.handle.api_url}/ranks", timeout=10).json()
    assert [(r["rank"], r["replica"], r["stage"], r["node"]) for r in ranks] == [
        ("rank-0", "replica-0", "replica-0.stage-0", "node-0"), ("rank-1", "replica-0", "replica-0.stage-1", "node-0"),
        ("rank-2", "replica-1", "replica-1.stage-0", "node-1"), ("rank-3", "replica-1", "replica-1.stage-1", "node-1")]
    assert set(engine.handle.rank_pids()) == {"rank-0", "rank-1", "rank-2", "rank-3"}


def test_requests_spread_over_replicas_with_the_same_model(engine) -> None:
    results: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: results.append(complete(engine, temperature=0.7, seed=5)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert [r.status_code for r in results] == [200] * 8
    assert len({r.json()["choices"][0]["text"] for r in results}) == 1  # same weights and seed on every replica
    served = [metrics(engine, f"replica-{d}")["vllm:generation_tokens_total"] for d in (0, 1)]
    assert all(s > 0 for s in served) and sum(served) >= 8 * 12


def test_profile_covers_every_replica_and_names_places(engine) -> None:
    api = engine.handle.api_url
    assert httpx.post(f"{api}/start_profile", timeout=120).status_code == 200
    threads = [threading.Thread(target=complete, args=(engine, 6)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    paths = httpx.post(f"{api}/stop_profile", timeout=300).json()["traces"]
    assert sorted(Path(p).name for p in paths) == [f"rank-{r}.json.gz" for r in range(4)]
    for path in paths:
        with gzip.open(path, "rt") as fh:
            doc = json.load(fh)
        head, events = doc["chaosbench"], doc["traceEvents"]
        assert head["layout"] == "2x2x1"
        names = {e["name"] for e in events if e.get("ph") == "X"}
        assert ("pp.send" in names) == (head["stage"] == 0) and ("pp.recv" in names) == (head["stage"] == 1)
        label = f"replica-{head['replica']},replica-{head['replica']}.stage-{head['stage']},tp-0"
        assert any(e.get("name") == "process_labels" and e["args"]["labels"] == label for e in events)
        assert all("role" in e["args"] for e in events if e.get("ph") == "X")


def test_rank_exporters_carry_replica_and_stage(engine) -> None:
    rank = metrics(engine, "rank-3")
    for name in ("DCGM_FI_DEV_POWER_USAGE", "chaosbench_rank_step_seconds_count", "chaosbench_rank_p2p_seconds_count",
                 "chaosbench_rank_restarts_total"):
        assert name in rank, name
    target = dict(engine.handle.metrics_targets)["rank-3"]
    text = httpx.get(f"http://{target}/metrics", timeout=10).text
    assert 'replica="replica-1",stage="replica-1.stage-1"' in text


def test_xid_restarts_only_its_replica(engine) -> None:
    old = engine.handle.rank_pids()
    results: list[httpx.Response] = []
    workers = [threading.Thread(target=lambda: results.append(complete(engine, max_tokens=60))) for _ in range(4)]
    for w in workers:
        w.start()
    time.sleep(0.5)
    DeviceControl(engine.tmp / "ctl", "rank-3").set(xid=79)
    for w in workers:
        w.join(timeout=180)
    assert [r.status_code for r in results] == [200] * 4
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and engine.handle.rank_pids()["rank-3"] == old["rank-3"]:
        time.sleep(1)  # the other replica may have served all four; the fault fires on replica 1's next step
        complete(engine, max_tokens=4)
    new = engine.handle.rank_pids()
    assert new["rank-2"] != old["rank-2"] and new["rank-3"] != old["rank-3"]  # replica 1's pipeline restarted
    assert new["rank-0"] == old["rank-0"] and new["rank-1"] == old["rank-1"]  # replica 0 untouched
    lines = [json.loads(ln) for ln in (engine.tmp / "run" / "logs" / "engine.jsonl").read_text().splitlines()]
    assert any(ln["component"] == "rank-3" and "restarting replica-1's pipeline" in ln["message"] for ln in lines)
    assert metrics(engine, "rank-3")["chaosbench_rank_restarts_total"] == 1


def test_shutdown_leaves_no_processes(engine) -> None:
    pids = engine.handle.rank_pids()
    engine.handle.shutdown()
    engine.ray.shutdown()
    deadline = time.monotonic() + 30
    left = []
    while time.monotonic() < deadline:
        left = [p for p in psutil.Process().children(recursive=True) if p.pid not in engine.before]
        left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not left and not any(psutil.pid_exists(p) for p in pids.values()):
            break
        time.sleep(0.5)
    assert not left, [p.cmdline()[:3] for p in left]
