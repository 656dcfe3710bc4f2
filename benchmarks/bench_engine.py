"""Throughput and latency of the mini engine on a local Ray, with tracing off and on.

    .venv/bin/python benchmarks/bench_engine.py [--ranks 4] [--nodes 2] [--streams 4] [--seconds 10]
        [--rounds 2] [--trace-ops]

Prints tokens/s, p50/p99 TTFT and inter-token latency per phase (tracing off, on, off again)
and the profiling overhead (throughput with tracing on vs the mean of the two off phases).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _scenario(args: argparse.Namespace) -> SimpleNamespace:
    model = SimpleNamespace(name="mini-llama", layers=args.layers, hidden=256, heads=4, vocab=2048, max_seq_len=512)
    topo = SimpleNamespace(nodes=args.nodes, tensor_parallel=args.ranks, data_parallel=1)
    return SimpleNamespace(spec=SimpleNamespace(deployment=SimpleNamespace(topology=topo, model=model),
                                                workload=SimpleNamespace(seed=1)))


def _stream(api: str, prompt: str, max_tokens: int) -> tuple[float, list[float], int]:
    body = {"prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    t0 = time.perf_counter()
    stamps = []
    with httpx.stream("POST", f"{api}/v1/completions", json=body, timeout=300) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                stamps.append(time.perf_counter())
    itl = [b - a for a, b in zip(stamps, stamps[1:])]
    return stamps[0] - t0, itl, len(stamps)


def run_phase(api: str, streams: int, seconds: float, prompt: str, max_tokens: int) -> dict:
    ttft: list[float] = []
    itl: list[float] = []
    tokens = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def user() -> None:
        while time.perf_counter() < stop:
            first, gaps, n = _stream(api, prompt, max_tokens)
            with lock:
                ttft.append(first)
                itl.extend(gaps)
                tokens[0] += n

    t0 = time.perf_counter()
    threads = [threading.Thread(target=user) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1] if len(xs) > 1 else float("nan")  # noqa: E731
    return {"tokens_per_s": tokens[0] / wall, "requests": len(ttft), "ttft_p50_ms": 1000 * q(ttft, 50),
            "ttft_p99_ms": 1000 * q(ttft, 99), "itl_p50_ms": 1000 * q(itl, 50), "itl_p99_ms": 1000 * q(itl, 99)}


def _rank_cpu_and_steps(h) -> tuple[float, float]:
    """CPU seconds used by all rank processes, and engine steps so far (rank-0's step counter).

    CPU per step does not depend on how busy the rest of the machine is, unlike throughput."""
    import psutil

    cpu = sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in h.rank_pids().values())
    target = dict(h.metrics_targets)["rank-0"]
    text = httpx.get(f"http://{target}/metrics", timeout=10).text
    steps = next(float(ln.split()[-1]) for ln in text.splitlines()
                 if ln.startswith("chaosbench_rank_step_seconds_count"))
    return cpu, steps


def measured(h, *phase_args) -> dict:
    cpu0, steps0 = _rank_cpu_and_steps(h)
    result = run_phase(h.api_url, *phase_args)
    cpu1, steps1 = _rank_cpu_and_steps(h)
    result["rank_cpu_ms_per_step"] = 1000 * (cpu1 - cpu0) / max(1.0, steps1 - steps0)
    return result


def compare(h, args: argparse.Namespace) -> dict:
    """Alternate tracing off and on ``--rounds`` times (the machine's load drifts); mean of each mode."""
    prompt = "x" * (args.prompt_tokens - 1)  # + BOS
    phase = (args.streams, args.seconds, prompt, args.max_tokens)
    run_phase(h.api_url, args.streams, 3.0, prompt, args.max_tokens)  # warm-up
    rows: dict[str, list[dict]] = {"off": [], "on": []}
    stop_s, traces = [], []
    for _ in range(args.rounds):
        rows["off"].append(measured(h, *phase))
        httpx.post(f"{h.api_url}/start_profile", timeout=120)
        rows["on"].append(measured(h, *phase))
        t1 = time.perf_counter()
        traces = httpx.post(f"{h.api_url}/stop_profile", timeout=600).json()["traces"]
        stop_s.append(time.perf_counter() - t1)
    rows["off"].append(measured(h, *phase))
    for mode, rs in rows.items():
        for r in rs:
            print(f"{mode:4s} " + " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in r.items()), flush=True)
    mean = {m: {k: statistics.fmean(r[k] for r in rs) for k in rs[0]} for m, rs in rows.items()}
    overhead = 1 - mean["on"]["tokens_per_s"] / mean["off"]["tokens_per_s"]
    cpu_overhead = mean["on"]["rank_cpu_ms_per_step"] / mean["off"]["rank_cpu_ms_per_step"] - 1
    size = sum(Path(p).stat().st_size for p in traces)
    print(f"mean off: {mean['off']['tokens_per_s']:.1f} tok/s, TTFT p50 {mean['off']['ttft_p50_ms']:.0f} ms "
          f"p99 {mean['off']['ttft_p99_ms']:.0f} ms, ITL p50 {mean['off']['itl_p50_ms']:.0f} ms")
    print(f"mean on:  {mean['on']['tokens_per_s']:.1f} tok/s, TTFT p50 {mean['on']['ttft_p50_ms']:.0f} ms "
          f"p99 {mean['on']['ttft_p99_ms']:.0f} ms, ITL p50 {mean['on']['itl_p50_ms']:.0f} ms")
    print(f"profiling overhead: {100 * overhead:.1f}% throughput, {100 * cpu_overhead:.1f}% rank CPU per step; "
          f"stop_profile {statistics.fmean(stop_s):.1f}s (engine keeps serving); "
          f"{len(traces)} traces, {size / 1e6:.1f} MB gz")
    return {"rows": rows, "mean": mean, "overhead": overhead, "cpu_overhead": cpu_overhead, "stop_profile_s": stop_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    ap.add_argument("--rounds", type=int, default=2, help="off/on pairs (plus a final off)")
    ap.add_argument("--prompt-tokens", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--trace-ops", action="store_true", help="traces also record every aten:: op")
    args = ap.parse_args()
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
                      PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    import psutil
    import ray
    from ray import serve

    from harness.engines.mini import deploy

    tmp = Path(tempfile.mkdtemp(prefix="cbbench-", dir="/tmp"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = {f"node-{i}": 1000 for i in range(args.nodes)}
    ray.init(address="local", include_dashboard=False, _temp_dir=str(tmp / "ray"), resources=nodes,
             log_to_driver=False)
    try:
        t0 = time.perf_counter()
        h = deploy("local", _scenario(args), tmp / "run", trace_dir=tmp / "traces", control_dir=tmp / "ctl",
                   node_ips={n: "127.0.0.1" for n in nodes}, http_host="127.0.0.1", http_port=port, gloo_ifname=None,
                   trace_ops=args.trace_ops)
        print(f"deploy: {time.perf_counter() - t0:.1f}s, {args.ranks} ranks on {args.nodes} node(s)", flush=True)
        report = compare(h, args)
        rss = {r: psutil.Process(pid).memory_info().rss / 2**20 for r, pid in h.rank_pids().items()}
        print("rank RSS MiB: " + ", ".join(f"{r}={v:.0f}" for r, v in rss.items()))
        print(json.dumps({**report, "rank_rss_mib": rss}))
        h.shutdown()
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
