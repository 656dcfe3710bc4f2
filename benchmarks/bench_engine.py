"""Throughput and latency of the mini engine on a local Ray, with tracing off and on.

    .venv/bin/python benchmarks/bench_engine.py [--ranks 4] [--nodes 2] [--streams 4] [--seconds 10]
        [--rounds 2] [--trace-ops] [--layout DPxPPxTP]
    .venv/bin/python benchmarks/bench_engine.py --no-ray --layouts 1x1x4,2x1x2,1x2x2,2x2x2 [--streams 4]
        [--seconds 10] [--rounds 1] [--nodes 2]

Prints tokens/s, p50/p99 TTFT and inter-token latency per phase (tracing off, on, off again)
and the profiling overhead (throughput with tracing on vs the mean of the two off phases).
``--layout DPxPPxTP`` (Ray, needs a free machine: it starts its own local Ray and Serve) deploys that layout
(``--ranks`` is then dp*pp*tp) and adds the ready time (deploy until healthy).

``--no-ray`` measures per layout without Ray or Serve: each rank is a plain process running the real
RankWorker behind a pipe (``LocalRay``, the few Ray calls the engine core makes), one EngineCore per
replica in this process, requests spread round-robin over the replicas as Serve's router would, no HTTP.
Per layout: ready time (all replicas' ranks up and grouped), throughput, TTFT p50/p99, ITL and the
tracing overhead; one JSON line each. Serve's HTTP path is not in these numbers.
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
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _scenario(args: argparse.Namespace) -> SimpleNamespace:
    model = SimpleNamespace(name="mini-llama", layers=args.layers, hidden=256, heads=4, vocab=2048, max_seq_len=512)
    dp, pp, tp = parse_layout(args.layout) if args.layout else (1, 1, args.ranks)
    topo = SimpleNamespace(nodes=args.nodes, tensor_parallel=tp, data_parallel=dp, pipeline_parallel=pp)
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
    return _latency_summary(ttft, itl, tokens[0], time.perf_counter() - t0)


def parse_layout(text: str) -> tuple[int, int, int]:
    """``"2x2x2"`` -> (data, pipeline, tensor parallel)."""
    dp, pp, tp = (int(x) for x in text.lower().split("x"))
    return dp, pp, tp


def _latency_summary(ttft: list[float], itl: list[float], tokens: int, wall: float) -> dict:
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1] if len(xs) > 1 else float("nan")  # noqa: E731
    return {"tokens_per_s": tokens / wall, "requests": len(ttft), "ttft_p50_ms": 1000 * q(ttft, 50),
            "ttft_p99_ms": 1000 * q(ttft, 99), "itl_p50_ms": 1000 * q(itl, 50), "itl_p99_ms": 1000 * q(itl, 99)}


def _rank_cpu_and_steps(h) -> tuple[float, float]:
    """CPU seconds used by all rank processes, and engine steps so far (the step counters of each replica's
    first rank: rank-0 with one replica).

    CPU per step does not depend on how busy the rest of the machine is, unlike throughput."""
    import psutil

    cpu = sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in h.rank_pids().values())
    targets = dict(h.metrics_targets)
    firsts = [f"rank-{r}" for r in _replica_first_ranks(targets)]
    steps = 0.0
    for rank in firsts:
        text = httpx.get(f"http://{targets[rank]}/metrics", timeout=10).text
        steps += next(float(ln.split()[-1]) for ln in text.splitlines()
                      if ln.startswith("chaosbench_rank_step_seconds_count"))
    return cpu, steps


def _replica_first_ranks(targets: dict[str, str]) -> list[int]:
    replicas = sum(c.startswith("replica-") for c in targets) or 1
    ranks = sum(c.startswith("rank-") for c in targets)
    return [d * (ranks // replicas) for d in range(replicas)]


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
    ap.add_argument("--layout", help="DPxPPxTP for the Ray run (default: 1x1x<ranks>)")
    ap.add_argument("--no-ray", action="store_true", help="per-layout numbers without Ray/Serve (plain processes)")
    ap.add_argument("--layouts", default="1x1x4,2x1x2,1x2x2,2x2x2", help="with --no-ray: DPxPPxTP,...")
    args = ap.parse_args()
    if args.no_ray:
        for layout in args.layouts.split(","):
            print(json.dumps(bench_layout(parse_layout(layout), args)), flush=True)
        return
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
                      PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    import psutil
    import ray
    from ray import serve

    from chaosbench.engines.mini import deploy

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
        ready_s = time.perf_counter() - t0
        print(f"deploy: {ready_s:.1f}s, layout {args.layout or f'1x1x{args.ranks}'} on {args.nodes} node(s)",
              flush=True)
        report = compare(h, args)
        rss = {r: psutil.Process(pid).memory_info().rss / 2**20 for r, pid in h.rank_pids().items()}
        print("rank RSS MiB: " + ", ".join(f"{r}={v:.0f}" for r, v in rss.items()))
        print(json.dumps({**report, "rank_rss_mib": rss, "ready_s": ready_s, "layout": args.layout}))
        h.shutdown()
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------- without Ray
class LocalRay:
    """The Ray calls EngineCore makes (remote, options, get, wait, kill, get_actor), over plain processes: each
    actor is a process running the real RankWorker, one call at a time, as a Ray actor does."""

    def __init__(self) -> None:
        import multiprocessing

        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["torch", "chaosbench.engines.mini.worker"])
        from multiprocessing import forkserver

        forkserver.ensure_running()  # torch is imported once here, not inside the first layout's ready time
        self.named: dict[tuple[str, str], _Actor] = {}

    def remote(self, cls: type) -> SimpleNamespace:
        def options(**opts) -> SimpleNamespace:
            def remote(*args) -> _Actor:
                actor = _Actor(self.ctx, cls, args)
                if "name" in opts:
                    self.named[(opts["namespace"], opts["name"])] = actor
                return actor

            return SimpleNamespace(remote=remote)

        return SimpleNamespace(options=options)

    def get(self, refs, timeout: float | None = None):
        return [r.result(timeout) for r in refs] if isinstance(refs, list) else refs.result(timeout)

    def wait(self, pending: list, num_returns: int = 1) -> tuple[list, list]:
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        first = [f for f in pending if f in done][:num_returns]
        return first, [f for f in pending if f not in first]

    def kill(self, actor: _Actor, no_restart: bool = True) -> None:
        actor.proc.kill()
        self.named = {k: v for k, v in self.named.items() if v is not actor}

    def get_actor(self, name: str, namespace: str | None = None) -> _Actor:
        try:
            return self.named[(namespace or "", name)]
        except KeyError:
            raise ValueError(f"no actor {name!r}") from None


class _Actor:
    def __init__(self, ctx, cls: type, args: tuple) -> None:
        from collections import deque

        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_actor_main, args=(child, cls, args), daemon=True)
        self.proc.start()
        self.lock = threading.Lock()
        self.pending: deque = deque()
        threading.Thread(target=self._read, daemon=True).start()

    def __getattr__(self, method: str) -> SimpleNamespace:
        return SimpleNamespace(remote=lambda *args: self._call(method, args))

    def _call(self, method: str, args: tuple):
        from concurrent.futures import Future

        fut: Future = Future()
        with self.lock:
            self.pending.append(fut)
            self.conn.send((method, args))
        return fut

    def _read(self) -> None:
        while True:
            try:
                ok, value = self.conn.recv()
            except (EOFError, OSError):
                while self.pending:
                    self.pending.popleft().set_exception(RuntimeError("rank process died"))
                return
            fut = self.pending.popleft()
            fut.set_result(value) if ok else fut.set_exception(value)


def _actor_main(conn, cls: type, args: tuple) -> None:
    obj = cls(*args)
    while True:
        method, call_args = conn.recv()
        try:
            conn.send((True, getattr(obj, method)(*call_args)))
        except Exception as exc:  # noqa: BLE001 - handed to the caller, as Ray does
            conn.send((False, exc))


def _local_phase(cores: list, streams: int, seconds: float, prompt: list[int], max_tokens: int) -> dict:
    """Closed-loop streams straight into the engine cores, round-robin over the replicas (Serve's router)."""
    from chaosbench.engines.mini.scheduler import Sequence

    ttft: list[float] = []
    itl: list[float] = []
    tokens = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    counter = iter(range(10**9))

    def user(u: int) -> None:
        while time.perf_counter() < stop:
            n = next(counter)
            done, stamps = threading.Event(), []
            t0 = time.perf_counter()

            def emit(ev, stamps=stamps, done=done) -> None:
                stamps.append(time.perf_counter())
                if ev.finish_reason:
                    done.set()

            cores[n % len(cores)].submit(Sequence(rid=f"b{n}", prompt=prompt, max_tokens=max_tokens, seed=n,
                                                  ignore_eos=True), emit)
            done.wait(300)
            with lock:
                ttft.append(stamps[0] - t0)
                itl.extend(b - a for a, b in pairwise(stamps))
                tokens[0] += len(stamps)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=user, args=(u,)) for u in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _latency_summary(ttft, itl, tokens[0], time.perf_counter() - t0)


def bench_layout(layout: tuple[int, int, int], args: argparse.Namespace) -> dict:
    """Ready time, throughput, TTFT and tracing overhead of one DP x PP x TP layout, without Ray."""
    from chaosbench.engines.mini import core as core_mod
    from chaosbench.engines.mini import profiling
    from chaosbench.engines.mini.config import engine_config

    dp, pp, tp = layout
    args.layout = f"{dp}x{pp}x{tp}"
    tmp = Path(tempfile.mkdtemp(prefix="cbbench-", dir="/tmp"))
    nodes = {f"node-{i}": "127.0.0.1" for i in range(args.nodes)}
    cfg = engine_config(_scenario(args), run_dir=tmp / "run", trace_dir=tmp / "traces", control_dir=tmp / "ctl",
                        node_ips=nodes, gloo_ifname=None)
    core_mod.ray = LocalRay()  # this process only: the engine core's Ray calls go to plain processes
    core_mod._reap = lambda pids: None
    cores = [core_mod.EngineCore(cfg, replica=d) for d in range(dp)]
    t0 = time.perf_counter()
    starters = [threading.Thread(target=c.start) for c in cores]  # Serve starts the replicas concurrently
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    ready_s = time.perf_counter() - t0
    prompt = [1] + [120] * (args.prompt_tokens - 1)
    phase = (args.streams, args.seconds, prompt, args.max_tokens)
    try:
        _local_phase(cores, args.streams, 3.0, prompt, args.max_tokens)  # warm-up
        rows: dict[str, list[dict]] = {"off": [], "on": []}
        size = 0
        for _ in range(args.rounds):
            rows["off"].append(_local_phase(cores, *phase))
            cores[0].start_profile().result(timeout=120)
            rows["on"].append(_local_phase(cores, *phase))
            raws = cores[0].stop_profile().result(timeout=600)
            size = sum(profiling.finalize(Path(r)).stat().st_size for r in raws)
        rows["off"].append(_local_phase(cores, *phase))
    finally:
        for c in cores:
            c.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    mean = {m: {k: statistics.fmean(r[k] for r in rs) for k in rs[0]} for m, rs in rows.items()}
    return {"layout": args.layout, "ranks": dp * pp * tp, "ready_s": ready_s, "off": mean["off"], "on": mean["on"],
            "tracing_overhead": 1 - mean["on"]["tokens_per_s"] / mean["off"]["tokens_per_s"],
            "trace_mb_gz_last_window": size / 1e6}


if __name__ == "__main__":
    main()
