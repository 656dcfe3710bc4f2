"""Evaluation cost: `chaosbench eval -m fast --workers 2` on N cases shaped like the real local cases.

    .venv/bin/python benchmarks/bench_eval.py [--cases 100] [--workers 2] [--methods fast] [--keep DIR]

Prints the wall time of the whole command, peak memory (largest single process, and the sampled sum over the
process tree), and per method the CPU seconds its tasks spent (``cpu_s`` in each result) with their statuses.

The cases: chaosbench.eval.synthetic writes each case in the layout `chaosbench eval` reads (and its ground truth,
its requests and logs); this script then replaces data.csv with one shaped like a real local-testbed case (140
columns: 19 ingress, 7 host, 11 per node, 23 per rank; 100 one-second rows, the fault at row 70; constant
columns, once-changing counters, leading gaps back-filled, sparse rates, an exact linear pair per rank, rank CPU
rates resampled from tests/fixtures/real/nccl-hang/data.csv) and adds the traces of a real fixture case, shifted
so that the fixture's injection lands on the case's. No real case of that width is stored in the repository
(the fixtures keep traces and a 4-column data.csv), so the column set follows harness/collect/prometheus.py.

Calibration: the load-following series share the request load, so the graph methods' decorrelation keeps ~30
of ~118 non-constant series, and RCAEval's granger() fails on every case as on the real ones. The graph methods
(circa, pc_*, fci_*, lingam_*, micro_diag) grow fast with the series kept: with an independent drift per series
(50-68 kept) they cost 3-4 s per case each and micro_diag ~15 s, so the total would be ~3x.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chaosbench.eval.discover import discover, ground_truth
from chaosbench.eval.synthetic import make_dataset

FIXTURES = ROOT / "tests" / "fixtures" / "real"
ROWS, INJECT_ROW = 100, 70
NODES, RANKS = ("node-0", "node-1"), ("rank-0", "rank-1", "rank-2", "rank-3")
RANK_NODE = {"rank-0": "node-0", "rank-1": "node-0", "rank-2": "node-1", "rank-3": "node-1"}
# metric -> how it behaves: load (follows the request load), const, step (changes once), lead (first rows
# back-filled), sparse (mostly 0), free (exact linear function of FB_USED)
INGRESS = {
    "latency": "load", "error_rate": "sparse", "vllm:num_requests_running": "load",
    "vllm:num_requests_waiting": "sparse", "vllm:kv_cache_usage_perc": "load", "vllm:num_preemptions:rate": "sparse",
    "vllm:prompt_tokens:rate": "load", "vllm:generation_tokens:rate": "load", "vllm:request_success:rate": "load",
    "vllm:time_to_first_token_seconds:mean": "load", "vllm:time_to_first_token_seconds:p95": "lead",
    "vllm:time_to_first_token_seconds:rate": "load", "vllm:inter_token_latency_seconds:mean": "load",
    "vllm:inter_token_latency_seconds:p95": "lead", "vllm:inter_token_latency_seconds:rate": "load",
    "vllm:request_queue_time_seconds:mean": "load", "vllm:request_queue_time_seconds:p95": "lead",
    "chaosbench_engine_rank_failures": "const", "chaosbench_engine_kv_blocks_usable": "step",
}
HOST = {"cpu:usage": "load", "load1": "load", "memory:available": "load", "cpu:pressure": "load",
        "memory:pressure": "sparse", "io:pressure": "sparse", "pgmajfault:rate": "sparse"}
NODE = {
    "chaosbench_node_cpu_usage_seconds:rate": "load", "chaosbench_node_memory_usage_bytes": "load",
    "chaosbench_node_memory_pressure_seconds:rate": "sparse", "chaosbench_node_memory_major_faults:rate": "sparse",
    "chaosbench_node_memory_failcnt:rate": "const", "chaosbench_node_cpu_throttled_seconds:rate": "sparse",
    "chaosbench_node_cpu_throttled_periods:rate": "sparse", "chaosbench_node_cpu_periods:rate": "load",
    "chaosbench_node_processes": "step", "chaosbench_node_network_receive_bytes:rate": "load",
    "chaosbench_node_network_transmit_bytes:rate": "load",
}
RANK = {
    "DCGM_FI_DEV_SM_CLOCK": "const", "DCGM_FI_DEV_MEM_CLOCK": "const", "DCGM_FI_DEV_POWER_USAGE": "load",
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": "const", "DCGM_FI_DEV_GPU_TEMP": "load", "DCGM_FI_DEV_GPU_UTIL": "load",
    "DCGM_FI_DEV_FB_USED": "load", "DCGM_FI_DEV_FB_FREE": "free", "DCGM_FI_DEV_XID_ERRORS": "const",
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": "const", "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "load",
    "DCGM_FI_PROF_SM_ACTIVE": "load", "DCGM_FI_PROF_DRAM_ACTIVE": "load", "DCGM_FI_PROF_PCIE_TX_BYTES": "load",
    "DCGM_FI_PROF_PCIE_RX_BYTES": "load", "chaosbench_rank_step_seconds:mean": "load",
    "chaosbench_rank_step_seconds:p95": "lead", "chaosbench_rank_step_seconds:rate": "load",
    "chaosbench_rank_allreduce_seconds:mean": "load", "chaosbench_rank_allreduce_seconds:p95": "lead",
    "process_cpu_seconds:rate": "fixture", "chaosbench_rank_resident_memory_bytes": "step",
    "chaosbench_rank_threads": "step",
}
# what a fault moves: the target's own columns (metric -> relative change) and the ingress latency
FAULT_COLUMNS = {
    "gpu-clock-lock": {"DCGM_FI_DEV_SM_CLOCK": -0.4, "chaosbench_rank_step_seconds:mean": 0.5},
    "gpu-power-cap": {"DCGM_FI_DEV_POWER_USAGE": -0.3, "chaosbench_rank_step_seconds:mean": 0.3},
    "gpu-memory-pressure": {"DCGM_FI_DEV_FB_USED": 0.5},
    "cpu-contention": {"chaosbench_node_cpu_usage_seconds:rate": 0.8,
                       "chaosbench_node_cpu_throttled_seconds:rate": 2.0},
    "host-memory-pressure": {"chaosbench_node_memory_usage_bytes": 0.6,
                             "chaosbench_node_memory_pressure_seconds:rate": 2.0},
}


def _smooth(x: np.ndarray, w: int = 5) -> np.ndarray:
    return pd.Series(x).rolling(w, min_periods=1).mean().to_numpy()  # Prometheus rates over 5 s windows


def _series(kind: str, rng: np.random.Generator, load: np.ndarray, scale: float, cpu: np.ndarray) -> np.ndarray:
    n = len(load)
    if kind == "const":
        return np.full(n, scale)
    if kind == "step":
        out = np.full(n, round(scale))
        out[rng.integers(5, n - 5):] += 1
        return out
    if kind == "sparse":
        out = np.zeros(n)
        hits = rng.random(n) < 0.04
        out[hits] = rng.exponential(scale, hits.sum())
        return out
    if kind == "fixture":
        return rng.choice(cpu, n) * (1 + 0.02 * rng.normal(size=n))
    out = scale * _smooth(load * (1 + 0.2 * rng.normal()) + 0.05 * rng.normal(size=n))
    if kind == "lead":  # histogram_quantile has no value until the window holds observations: back-filled
        out[:4] = out[4]
    return out


def real_frame(rng: np.random.Generator, t0: float, fault: str | None, target: str | None) -> pd.DataFrame:
    """One case's data.csv: ``ROWS`` seconds from ``t0``, the fault (if any) from row ``INJECT_ROW``."""
    cpu = pd.read_csv(FIXTURES / "nccl-hang" / "data.csv").drop(columns="time").to_numpy().ravel()
    load = _smooth(1.0 + 0.3 * np.sin(np.arange(ROWS) / rng.uniform(6, 15)) + 0.1 * rng.normal(size=ROWS), 3)
    node_load = {n: load * (1 + 0.1 * rng.normal()) + 0.05 * rng.normal(size=ROWS) for n in NODES}
    cols: dict[str, np.ndarray] = {"time": t0 + np.arange(ROWS, dtype=float)}
    groups = [("ingress", INGRESS, load), ("host", HOST, load)]
    groups += [(n, NODE, node_load[n]) for n in NODES]
    groups += [(r, RANK, node_load[RANK_NODE[r]]) for r in RANKS]
    for comp, metrics, comp_load in groups:
        for metric, kind in metrics.items():
            if kind == "free":
                cols[f"{comp}_{metric}"] = 80e9 - cols[f"{comp}_DCGM_FI_DEV_FB_USED"]
            else:
                cols[f"{comp}_{metric}"] = _series(kind, rng, comp_load, float(rng.uniform(1, 100)), cpu)
    if fault is not None and target is not None:
        for metric, rel in FAULT_COLUMNS[fault].items():
            col = cols[f"{target}_{metric}"]
            col[INJECT_ROW:] += rel * (np.abs(col).mean() + 1.0) * (1 + 0.05 * rng.normal(size=ROWS - INJECT_ROW))
        cols["ingress_latency"][INJECT_ROW:] *= 1.5
    return pd.DataFrame(cols)


def shifted_traces(src: Path, dst: Path, src_inject: float, dst_inject: float) -> None:
    """Copy a fixture's rank traces into ``dst``, every timestamp moved by the difference of injection times."""
    delta_us = (dst_inject - src_inject) * 1e6
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("rank-*.json.gz")):
        doc = json.loads(gzip.decompress(f.read_bytes()))
        for ev in doc["traceEvents"]:
            if "ts" in ev:
                ev["ts"] += delta_us
        meta = doc.get("chaosbench", {})
        meta["windows"] = [[a + delta_us / 1e6, b + delta_us / 1e6] for a, b in meta.get("windows", [])]
        (dst / f.name).write_bytes(gzip.compress(json.dumps(doc).encode(), compresslevel=1))


def build(root: Path, n: int) -> Path:
    """``n`` cases (every 10th clean) under ``root/ds``; returns the dataset directory."""
    ds = root / "ds"
    make_dataset(ds, n, clean_every=10)
    for i, ref in enumerate(discover(ds)):
        truth = ground_truth(ref)
        fault, target = (truth.get("fault_id"), truth.get("component")) if isinstance(truth, dict) else (
            truth.fault_id, truth.component)
        inject = float((ref.path / "inject_time.txt").read_text())
        rng = np.random.default_rng(i)
        frame = real_frame(rng, inject - INJECT_ROW, fault, target)
        frame.to_csv(ref.path / "data.csv", index=False)
        fixture = FIXTURES / ("clean" if fault is None else "cpu-contention")
        shifted_traces(fixture / "traces", ref.path / "traces",
                       float((fixture / "inject_time.txt").read_text()), inject)
    return ds


class TreeMemory(threading.Thread):
    """Samples the summed RSS of a process and its descendants every 0.2 s; ``peak`` in bytes."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            try:
                top = psutil.Process(self.pid)
                procs = [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, rss)
            self.stop.wait(0.2)


def run_eval(ds: Path, out: Path, methods: str, workers: int, timeout: float) -> tuple[float, float, int, int]:
    """(wall s, CPU s of all processes, largest single-process RSS, peak tree RSS) of `chaosbench eval`."""
    import resource

    cmd = [str(ROOT / ".venv" / "bin" / "chaosbench"), "eval", str(ds), "--out", str(out), "-m", methods,
           "--workers", str(workers), "--timeout", str(timeout), "--force"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    mem = TreeMemory(proc.pid)
    mem.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t
    mem.stop.set()
    mem.join()
    if proc.returncode != 0:
        sys.exit(f"chaosbench eval failed ({proc.returncode}): {err.strip()[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, after.ru_maxrss * 1024, mem.peak


def results(*roots: Path) -> list[dict]:
    """Every detector result written by the evaluation (under any ``detectors/`` directory)."""
    out = []
    for root in roots:
        for f in root.rglob("*.json"):
            if "detectors" in f.parts:
                doc = json.loads(f.read_text())
                if isinstance(doc, dict) and "method" in doc:
                    out.append(doc)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--methods", default="fast")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--keep", type=Path, help="build the dataset here and keep it (default: a temporary directory)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cb-bench-eval-") as tmp:
        root = args.keep or Path(tmp)
        t = time.perf_counter()
        ds = build(root, args.cases)
        width = len(pd.read_csv(next(ds.rglob("data.csv")), nrows=0).columns) - 1
        print(f"dataset: {args.cases} cases, {width} metric columns x {ROWS} rows, built in "
              f"{time.perf_counter() - t:.1f} s")
        wall, cpu, max_rss, tree_rss = run_eval(ds, root / "eval", args.methods, args.workers, args.timeout)
        print(f"chaosbench eval -m {args.methods} --workers {args.workers}: wall {wall:.1f} s ({wall / 60:.1f} min), "
              f"CPU {cpu:.1f} s in all processes; peak RSS {max_rss / 2**20:.0f} MiB (largest process), "
              f"{tree_rss / 2**20:.0f} MiB (process tree, sampled)")
        cpu_s: dict[str, float] = defaultdict(float)
        statuses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        errors: dict[str, str] = {}
        for doc in results(ds, root / "eval"):
            m = doc["method"]
            cpu_s[m] += float((doc.get("extra") or {}).get("cpu_s") or 0.0)
            statuses[m][doc.get("status", "?")] += 1
            if doc.get("error"):
                errors.setdefault(m, str(doc["error"])[:90])
        total = sum(cpu_s.values())
        print(f"CPU s in methods (sum of cpu_s): {total:.1f}; outside them (imports, reading, forks, scoring, "
              f"report): {cpu - total:.1f}")
        print(f"{'method':<20} {'cpu s':>8} {'per case':>9}  statuses  first error")
        for m, s in sorted(cpu_s.items(), key=lambda kv: -kv[1]):
            print(f"{m:<20} {s:8.1f} {s / args.cases:9.3f}  {dict(statuses[m])}  {errors.get(m, '')}")
        listed = json.loads((root / "eval" / "scores.json").read_text())["methods"]
        for m in (m for m in listed if not m["available"]):
            print(f"not run: {m['name']}: {m['reason'][:110]}")


if __name__ == "__main__":
    main()
