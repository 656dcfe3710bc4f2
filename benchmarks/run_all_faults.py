"""Run every fault scenario end to end on the local testbed and print what each fault did.

    .venv/bin/python benchmarks/run_all_faults.py [--only nccl-hang,cpu-throttle] [--out DIR] [--short]

One case per fault (scenarios/<fault-id>.yaml), through chaosbench.runner.run_scenario. The table: fault,
realism, verified?, time from the inject request to the verify signal, the symptom measured in the case
(a data.csv column during the fault window vs the 15 s before it), and the case's wall time. Needs root.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASELINE_S = 15.0
LAG_S = 5.0  # rate/histogram columns are 5 s windows: the fault shows until 5 s after its end

# fault id -> (data.csv column, what it is): "{r}" target rank (node faults: a rank on the node), "{n}" target node
# index, "{peer}" another rank than {r}
SYMPTOMS: dict[str, tuple[str, str]] = {
    "gpu-power-cap": ("rank-{r}_chaosbench_rank_step_seconds:mean", "target rank's step time"),
    "gpu-clock-lock": ("rank-{r}_chaosbench_rank_step_seconds:mean", "target rank's step time"),
    "gpu-compute-contention": ("rank-{r}_chaosbench_rank_step_seconds:mean", "target rank's step time"),
    "gpu-memory-pressure": ("rank-{r}_DCGM_FI_DEV_FB_USED", "target rank's device memory used"),
    "gpu-xid-error": ("rank-{r}_DCGM_FI_DEV_XID_ERRORS", "target rank's last XID"),
    "nccl-hang": ("rank-{peer}_chaosbench_rank_allreduce_seconds:mean", "a peer's all-reduce time"),
    "interconnect-degradation": ("rank-{r}_chaosbench_rank_allreduce_seconds:mean", "all-reduce time on the node"),
    "cpu-contention": ("rank-{r}_chaosbench_rank_step_seconds:mean", "step time of a rank on the node"),
    "cpu-throttle": ("node-{n}_chaosbench_node_cpu_throttled_periods:rate", "node's throttled periods"),
    "host-memory-pressure": ("node-{n}_chaosbench_node_memory_usage_bytes", "node's memory usage"),
    "network-delay": ("rank-{r}_chaosbench_rank_allreduce_seconds:mean", "all-reduce time on the node"),
}


@dataclass(frozen=True)
class Row:
    fault: str
    realism: str
    status: str
    verified: bool
    verify_s: float | None
    symptom: str
    wall_s: float


def _column(cols: list[str], fault: str, truth: dict, topo: dict) -> str | None:
    node = truth.get("node") or "node-0"
    on_node = sorted(int(r.split("-")[1]) for r, n in topo.get("rank_node", {}).items() if n == node)
    r = truth["rank"] if truth.get("rank") is not None else (on_node[0] if on_node else 0)
    peer = next((int(x.split("-")[1]) for x in topo["ranks"] if x != f"rank-{r}"), 0)
    name = SYMPTOMS[fault][0].format(r=r, n=node.split("-")[-1], peer=peer)
    return name if name in cols else None


def symptom(case: Path, fault: str) -> str:
    import pandas as pd

    truth = json.loads((case / "ground_truth.json").read_text())
    if not truth.get("verified") or truth.get("start") is None:
        return "-"
    df = pd.read_csv(case / "data.csv")
    topo = json.loads((case / "topology.json").read_text())
    col = _column(list(df.columns), fault, truth, topo)
    if col is None:
        return f"no column for {SYMPTOMS[fault][1]}"
    start, end = truth["start"], truth["end"] or truth["start"] + 10
    base = df[(df.time >= start - BASELINE_S) & (df.time < start)][col].mean()
    during = df[(df.time >= start) & (df.time <= end + LAG_S)][col].mean()
    ratio = f"x{during / base:.2f}" if base else "from zero"
    return f"{col}: {base:.4g} -> {during:.4g} ({ratio})"


def short_overrides(path: Path) -> dict:
    """45 s of load, the fault at 20 s for 10 s, no steady-state gate: a quick pass on a busy machine."""
    from chaosbench.scenario import load_scenario

    step = load_scenario(path).spec.faults[0].model_dump(mode="json", by_alias=True)
    step.update(start="20s", duration="10s")
    return {"workload": {"duration": "45s", "warmup": "5s"}, "traces": {"baseline": "10s"}, "steady_state": [],
            "faults": [step]}


def run_one(path: Path, out: Path, short: bool) -> Row:
    from chaosbench.errors import ChaosbenchError
    from chaosbench.faults.catalog import get_fault
    from chaosbench.runner import run_scenario
    from chaosbench.scenario import load_scenario

    scenario = load_scenario(path, short_overrides(path) if short else None)
    fault = scenario.spec.faults[0].id
    case = out / "cases" / fault
    t0 = time.monotonic()
    try:
        run_scenario(scenario, case)
    except ChaosbenchError as exc:
        print(f"{fault}: {exc}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - one broken case must not stop the table
        print(f"{fault}: {type(exc).__name__}: {exc}", file=sys.stderr)
    wall = time.monotonic() - t0
    if not case.is_dir():
        return Row(fault, get_fault(fault).local_realism, "partial", False, None, "-", wall)
    status = json.loads((case / "manifest.json").read_text()).get("status", "?")
    events = [json.loads(x) for x in (case / "events.jsonl").read_text().splitlines() if x.strip()]
    verify = next((e for e in events if e.get("stage") == "fault.verify" and e.get("event") == "end"), {})
    verified = verify.get("status") == "ok"
    return Row(fault, get_fault(fault).local_realism, status, verified, verify.get("duration_s"),
               symptom(case, fault), wall)


def main() -> None:
    from chaosbench.faults.catalog import FAULT_IDS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated fault ids (default: all eleven)")
    ap.add_argument("--out", type=Path, default=REPO / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-faults")
    ap.add_argument("--short", action="store_true", help="45 s cases (fault at 20 s for 10 s), no gate")
    a = ap.parse_args()
    faults = [f for f in a.only.split(",") if f] or list(FAULT_IDS)
    rows = [run_one(REPO / "scenarios" / f"{f}.yaml", a.out, a.short) for f in faults]
    print(f"\n{'fault':<26}{'realism':<10}{'status':<14}{'verified':<10}{'verify s':>9}{'wall s':>8}  symptom")
    for r in rows:
        vs = f"{r.verify_s:.2f}" if r.verify_s is not None else "-"
        print(f"{r.fault:<26}{r.realism:<10}{r.status:<14}{str(r.verified):<10}{vs:>9}{r.wall_s:>8.1f}  {r.symptom}")
    print(f"\ntotal wall: {sum(r.wall_s for r in rows):.1f} s for {len(rows)} cases; cases under {a.out / 'cases'}")


if __name__ == "__main__":
    main()
