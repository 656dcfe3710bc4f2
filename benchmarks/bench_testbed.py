"""Local testbed benchmark: time to a ready testbed and peak memory of the whole testbed.

    sudo .venv/bin/python benchmarks/bench_testbed.py [--scenario scenarios/clean.yaml] [--load-seconds 20]

Deploys the scenario's testbed (namespaces, Ray, Prometheus, engine), drives its load for
``--load-seconds``, samples the memory of every testbed process twice a second (RSS sum and
PSS sum: RSS double-counts shared pages), tears down and prints one JSON object:
time to ready (s), deploy breakdown, peak RSS/PSS (GB, target < 6 GB), teardown time (s).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil

from chaosbench.backends.local.cleanup import testbed_pids
from chaosbench.backends.local.plan import read_plan
from chaosbench.backends.local.testbed import deploy_local
from chaosbench.load.driver import LoadConfig, start_load
from chaosbench.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]


class MemorySampler(threading.Thread):
    def __init__(self, run_dir: Path):
        super().__init__(daemon=True)
        self.run_dir, self.stop = run_dir, threading.Event()
        self.peak_rss = self.peak_pss = 0
        self.peak_procs = 0

    def sample(self) -> None:
        state = self.run_dir / "testbed.json"
        if not state.is_file():
            return
        pids = testbed_pids(read_plan(state)) | {psutil.Process().pid}
        rss = pss = 0
        for pid in pids:
            try:
                mem = psutil.Process(pid).memory_full_info()
            except (psutil.Error, OSError):
                continue
            rss, pss = rss + mem.rss, pss + getattr(mem, "pss", mem.rss)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.peak_procs = max(self.peak_procs, len(pids))

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=REPO / "scenarios" / "clean.yaml")
    ap.add_argument("--load-seconds", type=float, default=20.0)
    args = ap.parse_args()
    scenario = load_scenario(args.scenario)
    run_dir = Path(tempfile.mkdtemp(prefix="cbtb-bench-")) / "run"
    sampler = MemorySampler(run_dir)
    sampler.start()
    t0 = time.monotonic()
    tb = deploy_local(scenario, run_dir)
    ready_s = time.monotonic() - t0
    try:
        cfg = LoadConfig.from_scenario(scenario, tb.api_url)
        cfg = dataclasses.replace(cfg, duration=args.load_seconds)
        load = start_load(cfg, run_dir / "load")
        load.wait_started()
        summary = load.finish(timeout_s=args.load_seconds + 60)
    finally:
        t1 = time.monotonic()
        left = tb.teardown()
        teardown_s = time.monotonic() - t1
        sampler.stop.set()
        sampler.join()
    topo = scenario.spec.deployment.topology
    print(json.dumps({
        "scenario": scenario.metadata.name, "nodes": topo.nodes, "tensor_parallel": topo.tensor_parallel,
        "time_to_ready_s": round(ready_s, 1), "teardown_s": round(teardown_s, 1),
        "peak_rss_gb": round(sampler.peak_rss / 1e9, 2), "peak_pss_gb": round(sampler.peak_pss / 1e9, 2),
        "peak_processes": sampler.peak_procs, "load_requests": summary["requests"],
        "load_throughput_rps": round(summary["throughput_rps"], 2), "leftovers": left.describe(),
    }))


if __name__ == "__main__":
    main()
