"""Case throughput with one testbed per suite: per-case wall, whole-run wall, redeploys, peak memory.

    .venv/bin/python benchmarks/bench_throughput.py scenarios/suites/core.yaml [--repetitions 1] [--out DIR]
    .venv/bin/python benchmarks/bench_throughput.py --analyze RUN_DIR      # numbers of a run made before

Runs ``chaosbench run FILE --no-eval`` (a subprocess, as a user would), samples the machine's used memory every
second, then reads the run's label journals: per case, the wall from its first to its last journal event (the
recovery gate, a deploy when one was needed, load, collect), and which cases had to deploy. Prints a table and
the summary (median per-case wall on a reused testbed: goal <= 75 s). Needs root for the fault mechanisms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def case_walls(run_dir: Path) -> list[dict]:
    out = []
    for rec in (json.loads(line) for line in (run_dir / "labels.jsonl").read_text().splitlines() if line.strip()):
        events = [json.loads(line) for line in (run_dir / "labels" / rec["case_id"] / "events.jsonl").read_text()
                  .splitlines() if line.strip()]
        stages = {(e["stage"], e["event"]): e for e in events}
        deployed = ("deploy", "end") in stages
        out.append({"case": rec["case_id"], "scenario": rec.get("scenario"), "status": rec.get("status"),
                    "wall_s": round(events[-1]["t"] - events[0]["t"], 1), "deployed": deployed,
                    "deploy_s": stages[("deploy", "end")].get("duration_s") if deployed else None,
                    "redeploy": any(e["stage"] == "testbed.redeploy" for e in events)})
    return out


def report(run_dir: Path, wall_s: float | None, peak_gb: float | None) -> None:
    rows = case_walls(run_dir)
    order = json.loads((run_dir / "run.json").read_text()).get("order", [])
    rows.sort(key=lambda r: order.index(r["case"]) if r["case"] in order else len(order))
    print(f"{'case':<14}{'scenario':<34}{'status':<14}{'wall_s':>8}  testbed")
    for r in rows:
        bed = f"deployed ({r['deploy_s']:.0f} s)" if r["deployed"] else "reused"
        print(f"{r['case']:<14}{str(r['scenario'])[:33]:<34}{str(r['status']):<14}{r['wall_s']:>8.1f}  "
              f"{bed}{' after a failed gate' if r['redeploy'] else ''}")
    reused = [r["wall_s"] for r in rows if not r["deployed"]]
    print(f"cases: {len(rows)}, on a reused testbed: {len(reused)}, deploys: {sum(r['deployed'] for r in rows)}, "
          f"redeploys after a failed gate: {sum(r['redeploy'] for r in rows)}")
    if reused:
        print(f"per-case wall on a reused testbed: median {statistics.median(reused):.1f} s "
              f"(min {min(reused):.1f}, max {max(reused):.1f}; goal <= 75 s)")
    print(f"per-case wall, all cases: median {statistics.median(r['wall_s'] for r in rows):.1f} s")
    if wall_s is not None:
        print(f"whole run (chaosbench run, --no-eval): {wall_s / 60:.1f} min")
    if peak_gb is not None:
        print(f"peak used memory of the machine during the run: {peak_gb:.2f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", type=Path)
    ap.add_argument("--repetitions", type=int)
    ap.add_argument("--out", type=Path, default=Path("/tmp/chaosbench-bench-throughput"))
    ap.add_argument("--analyze", type=Path, help="a run directory made before")
    args = ap.parse_args()
    if args.analyze:
        report(args.analyze, None, None)
        return
    if args.file is None:
        ap.error("give a suite, scenario or campaign file, or --analyze RUN_DIR")
    cmd = [str(REPO / ".venv" / "bin" / "chaosbench"), "run", str(args.file), "--no-eval", "--out", str(args.out)]
    if args.repetitions:
        cmd += ["--repetitions", str(args.repetitions)]
    base = psutil.virtual_memory().used
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            peak[0] = max(peak[0], psutil.virtual_memory().used)

    threading.Thread(target=sample, daemon=True).start()
    before = set(args.out.glob("*")) if args.out.is_dir() else set()
    t0 = time.monotonic()
    rc = subprocess.run(cmd, cwd=REPO).returncode
    wall = time.monotonic() - t0
    done.set()
    runs = sorted(set(args.out.glob("*")) - before)
    if not runs:
        sys.exit(f"no run directory was made (exit code {rc})")
    print(f"exit code {rc}; machine memory used before the run {base / 1e9:.2f} GB")
    report(runs[-1], wall, peak[0] / 1e9)


if __name__ == "__main__":
    main()
