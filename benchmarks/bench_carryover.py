"""Does a reused testbed carry a fault into the next case? Clean cases after each fault class vs on fresh testbeds.

    .venv/bin/python benchmarks/bench_carryover.py [--fresh 2] [--out DIR]
    .venv/bin/python benchmarks/bench_carryover.py --analyze RUN_DIR

Runs, through the runner itself (chaosbench.runner.run_jobs), one testbed that takes a fault of each class
followed by a clean case (fault, clean, fault, clean, ...), plus ``--fresh`` clean cases each on a testbed of
its own. Then compares the clean cases that followed a fault with the fresh ones:
- telemetry: per data.csv column, a two-sample Kolmogorov-Smirnov test of the after-fault clean values against
  the fresh clean values (scipy.stats.ks_2samp); a column "differs" when p < 0.01 / columns (Bonferroni);
- detectors: Outpost's and the Analyzer's case verdicts on every clean case (any anomaly = a false positive).
A fault class whose following clean case differs where the fresh ones do not is the one to redeploy after.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FAULT_PER_CLASS = {  # one shipped scenario per fault class
    "GPU": "gpu-clock-lock.yaml", "NCCL": "nccl-hang.yaml", "CPU": "cpu-contention.yaml",
    "memory": "host-memory-pressure.yaml", "network": "network-delay.yaml",
}


def make_jobs(fresh: int) -> list:
    from chaosbench.campaign import deployment_key
    from chaosbench.rundir import CaseJob, new_case_id
    from chaosbench.scenario import load_scenario

    clean = load_scenario(REPO / "scenarios" / "clean.yaml")
    group = deployment_key(clean)
    jobs, i = [], 0
    for cls, fname in FAULT_PER_CLASS.items():
        fault = load_scenario(REPO / "scenarios" / fname)
        jobs.append(CaseJob(i, new_case_id(), fault, group, {"role": "fault", "class": cls}))
        jobs.append(CaseJob(i + 1, new_case_id(), clean, group, {"role": "after", "class": cls}))
        i += 2
    for k in range(fresh):  # a group of its own: a new testbed each
        jobs.append(CaseJob(i + k, new_case_id(), clean, f"{group}#fresh-{k}", {"role": "fresh", "class": None}))
    return jobs


def _numeric(case: Path):
    import pandas as pd

    df = pd.read_csv(case / "data.csv")
    return df.drop(columns=["time"]).select_dtypes("number")


def _verdicts(case: Path) -> dict[str, bool | None]:
    from chaosbench.case import CaseView
    from chaosbench.detectors.analyzer import detect as analyzer
    from chaosbench.detectors.outpost import detect as outpost

    out: dict[str, bool | None] = {}
    for name, fn in (("outpost", outpost), ("analyzer", analyzer)):
        try:
            out[name] = bool(fn(CaseView(case)).anomalous)
        except Exception as exc:  # noqa: BLE001 - a failing detector is reported, not fatal
            print(f"  {name} failed on {case.name}: {exc}")
            out[name] = None
    return out


def analyze(run_dir: Path) -> None:
    from scipy.stats import ks_2samp

    plan = {e["case_id"]: e for e in json.loads((run_dir / "plan.json").read_text())}
    labels = {r["case_id"]: r for r in (json.loads(x) for x in (run_dir / "labels.jsonl").read_text().splitlines())}
    cases = {cid: run_dir / "cases" / cid for cid in plan if labels.get(cid, {}).get("status") == "completed"}
    fresh = [cases[c] for c, e in plan.items() if e.get("role") == "fresh" and c in cases]
    if not fresh:
        sys.exit("no completed fresh clean case to compare with")
    pooled = {}
    for c in fresh:
        for col, values in _numeric(c).items():
            pooled.setdefault(col, []).extend(values.dropna().tolist())
    print(f"{'clean case':<22}{'after':<10}{'columns':>8}{'differ':>8}  outpost  analyzer  most different columns")
    rows = [(c, e) for c, e in plan.items() if e.get("role") in ("after", "fresh") and c in cases]
    for cid, entry in rows:
        df = _numeric(cases[cid])
        tested = [(col, ks_2samp(df[col].dropna(), pooled[col]).pvalue) for col in df.columns
                  if col in pooled and df[col].notna().sum() > 5 and df[col].nunique() > 1]
        alpha = 0.01 / max(1, len(tested))
        differ = sorted((p, col) for col, p in tested if p < alpha)
        v = _verdicts(cases[cid])
        label = entry.get("class") or "(fresh)"
        print(f"{cid:<22}{label:<10}{len(tested):>8}{len(differ):>8}  {str(v['outpost']):<8} {str(v['analyzer']):<9} "
              + ", ".join(col for _, col in differ[:3]))
    print("differ: columns whose after-fault values differ from the fresh clean cases' (KS, Bonferroni 0.01); "
          "a fresh case is compared with all fresh cases, itself included (a reference, not a test)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fresh", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/chaosbench-bench-carryover"))
    ap.add_argument("--analyze", type=Path)
    args = ap.parse_args()
    if args.analyze:
        analyze(args.analyze)
        return
    from chaosbench.rundir import RunDir
    from chaosbench.runner import run_jobs

    run = RunDir(args.out / time.strftime("%Y%m%d-%H%M%S-carryover"))
    jobs = make_jobs(args.fresh)
    source = REPO / "benchmarks" / "bench_carryover.py"
    run.start("benchmark", source, jobs)
    run_jobs(jobs, run, log=lambda msg: print(msg, flush=True),
             on_case=lambda i, n, job: print(f"case {i + 1}/{n}: {job.scenario.metadata.name} ({job.draw['role']})",
                                             flush=True))
    analyze(run.root)


if __name__ == "__main__":
    main()
