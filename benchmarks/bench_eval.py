"""Evaluation throughput: N synthetic cases x the fast methods, timed, for several --workers values.

    .venv/bin/python benchmarks/bench_eval.py [--cases 100] [--workers 1 2 4] [--methods fast] [--timeout 120]

Prints the wall time of each full evaluation (every result recomputed), tasks per second, and the mean
runtime per method. Synthetic cases: harness.eval.synthetic (7 components, 27 metric columns, 300 s at 1 Hz).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.eval.synthetic import make_dataset  # noqa: E402
from harness.evaluate import evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--methods", nargs="+", default=["fast"])
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cb-bench-eval-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make_dataset(root / "ds", args.cases, clean_every=10)
        print(f"dataset: {args.cases} cases in {time.perf_counter() - t:.1f} s")
        for workers in args.workers:
            t = time.perf_counter()
            out = evaluate(root / "ds", root / f"out-{workers}", args.methods, workers, timeout_s=args.timeout,
                           force=True)
            wall = time.perf_counter() - t
            doc = json.loads((out / "scores.json").read_text())
            tasks = doc["run"]["tasks"]
            print(f"workers={workers}: {tasks} tasks in {wall:.1f} s ({tasks / wall:.2f} tasks/s, "
                  f"run phase {doc['run']['wall_s']:.1f} s)")
        per_method: dict[str, list[float]] = defaultdict(list)
        cpu: dict[str, list[float]] = defaultdict(list)
        statuses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for o in doc["outcomes"]:
            per_method[o["method"]].append(o["runtime_s"])
            statuses[o["method"]][o["status"]] += 1
            res = json.loads((root / "ds" / o["case"] / "detectors" / f"{o['method']}.json").read_text())
            cpu[o["method"]].append(res.get("extra", {}).get("cpu_s") or 0.0)
        total_cpu = sum(sum(v) for v in cpu.values())
        print(f"CPU seconds for all tasks: {total_cpu:.1f} (per case {total_cpu / args.cases:.1f}); "
              f"wall on an idle machine is about that / workers")
        print(f"{'method':<20} {'wall s':>8} {'max s':>8} {'cpu s':>8}  statuses   (last run)")
        for m, times in sorted(per_method.items(), key=lambda kv: -statistics.fmean(kv[1])):
            print(f"{m:<20} {statistics.fmean(times):8.2f} {max(times):8.2f} {statistics.fmean(cpu[m]):8.2f}"
                  f"  {dict(statuses[m])}")


if __name__ == "__main__":
    main()
