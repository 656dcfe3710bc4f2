"""Fault timings: lifecycle latencies per fault, one full fault case, optionally the whole core suite.

    .venv/bin/python benchmarks/bench_faults.py                      # lifecycle latencies on a small bed
    .venv/bin/python benchmarks/bench_faults.py --case scenarios/cpu-throttle.yaml   # one full case (goal <= 120 s)
    .venv/bin/python benchmarks/bench_faults.py --suite scenarios/suites/core.yaml --repetitions 1

Lifecycle latencies run every fault through chaosbench.faults.lifecycle.injected on the test bed of tests/faults
(two namespaces on a bridge, node cgroups, a busy "rank" per node, the engine's device layer + Prometheus):
preflight+prepare+inject, inject -> verify signal, and recovery, in milliseconds. Needs root.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "faults"))

STEPS = {
    "gpu-power-cap": {"rank": 1, "params": {"watts": 150}},
    "gpu-clock-lock": {"rank": 1, "params": {"sm_clock_mhz": 500}},
    "gpu-compute-contention": {"rank": 1, "params": {"workers": 1}},
    "gpu-memory-pressure": {"rank": 1, "params": {"fraction": 0.5}},
    "gpu-xid-error": {"rank": 1, "params": {"xid": 79}},
    "nccl-hang": {"rank": 1},
    "interconnect-degradation": {"node": "node-1", "params": {"rate_mbit": 5.0}},
    "cpu-contention": {"node": "node-1", "params": {"workers": 1}},
    "cpu-throttle": {"node": "node-1", "params": {"cpu_percent": 5, "period_us": 20000}},
    "host-memory-pressure": {"node": "node-1", "params": {"memory_mb": 128}},
    "network-delay": {"node": "node-1", "params": {"delay_ms": 50.0}},
}


def lifecycle_latencies() -> None:
    import os

    from faultbed import Traffic, make_bed, make_step, snapshot

    from chaosbench.case import CaseWriter
    from chaosbench.faults.lifecycle import injected

    tmp = Path(tempfile.mkdtemp(prefix="cbflt-bench-"))
    os.environ.setdefault("CHAOSBENCH_RECOVERY_DIR", str(tmp / "recovery"))
    bed = make_bed(tmp / "bed", with_prometheus=True)
    print(f"{'fault':<26}{'inject ms':>10}{'verify ms':>10}{'recover ms':>11}  clean  evidence")
    try:
        with Traffic(bed.nodes["node-1"].ip):
            before = snapshot(bed)
            for i, (fid, kw) in enumerate(STEPS.items()):
                writer = CaseWriter(tmp / f"{bed.bridge}-{fid}")
                with injected(bed, make_step(fid, **kw), writer, i) as fault:
                    t_in = time.perf_counter()
                t_out = time.perf_counter()
                events = [json.loads(x) for x in (writer.path / "events.jsonl").read_text().splitlines()]
                inject_s = next(e["duration_s"] for e in events if (e["stage"], e["event"]) == ("fault.inject", "end"))
                verify_ms = (fault.verified_at - fault.requested_at) * 1000
                clean = snapshot(bed) == before
                print(f"{fid:<26}{inject_s * 1000:>10.0f}{verify_ms:>10.0f}{(t_out - t_in) * 1000:>11.0f}  "
                      f"{'yes' if clean else 'NO':<5}  {fault.evidence.detail if fault.evidence else '-'}")
    finally:
        bed.close()


def one_case(path: Path, out: Path) -> float:
    from chaosbench.runner import run_scenario
    from chaosbench.scenario import load_scenario

    scenario = load_scenario(path)
    t0 = time.monotonic()
    case = run_scenario(scenario, out / "cases" / scenario.metadata.name)
    wall = time.monotonic() - t0
    status = json.loads((case / "manifest.json").read_text())["status"]
    print(f"case {scenario.metadata.name}: {wall:.1f} s wall (load {scenario.spec.workload.duration:g} s), "
          f"status {status}, goal <= 120 s: {'met' if wall <= 120 else 'MISSED'}")
    return wall


def suite(path: Path, out: Path, repetitions: int | None) -> None:
    from chaosbench.runner import run_suite
    from chaosbench.scenario import load_suite

    s = load_suite(path)
    if repetitions:
        s = s.model_copy(update={"spec": s.spec.model_copy(update={"repetitions": repetitions,
                                                                   "seeds": s.spec.seeds[:repetitions]})})
    t0 = time.monotonic()
    stamps: list[tuple[str, float]] = []
    last = [time.monotonic()]

    def on_case(i: int, n: int, name: str) -> None:
        now = time.monotonic()
        if i:
            stamps.append((prev[0], now - last[0]))
        prev[0], last[0] = name, now

    prev = [""]
    cases = run_suite(s, out, suite_path=path, on_case=on_case)
    stamps.append((prev[0], time.monotonic() - last[0]))
    for name, secs in stamps:
        print(f"  {name:<34}{secs:>7.1f} s")
    print(f"suite {s.metadata.name}: {len(cases)} cases in {time.monotonic() - t0:.1f} s wall")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", type=Path, help="run one full fault case and time it")
    ap.add_argument("--suite", type=Path, help="run a suite (e.g. scenarios/suites/core.yaml) and time it")
    ap.add_argument("--repetitions", type=int, default=None)
    ap.add_argument("--out", type=Path, default=REPO / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-bench-faults")
    a = ap.parse_args()
    if a.case:
        one_case(a.case, a.out)
    elif a.suite:
        suite(a.suite, a.out, a.repetitions)
    else:
        lifecycle_latencies()


if __name__ == "__main__":
    main()
