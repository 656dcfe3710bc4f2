"""Scores of one method over a subset of faults (and every clean case), read back from an eval's scores.json.

    .venv/bin/python benchmarks/score_subset.py results/<run>/eval --method outpost \
        --faults gpu-clock-lock,gpu-compute-contention,gpu-power-cap,nccl-hang,cpu-throttle

Used for issue 14's "Outpost component AC@1 on the faults visible in traces": the subset is named on the command
line (Outpost's docstring says which faults change the timing recorded in the target's own traces), so the numbers
come from the same per-case outcomes as the leaderboard and the same scoring code (chaosbench.score.aggregate).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chaosbench.report.scores import fmt_ci
from chaosbench.score.aggregate import score_method
from chaosbench.score.stats import Interval


def _fmt(value: float | None, ci: Interval = None) -> str:
    return fmt_ci((value, ci))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", type=Path, help="an eval directory holding scores.json")
    parser.add_argument("--method", required=True)
    parser.add_argument("--faults", required=True, help="comma-separated fault ids (primary fault of a case)")
    args = parser.parse_args(argv)
    path = args.eval_dir / "scores.json"
    try:
        outcomes = json.loads(path.read_text())["outcomes"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {path}: cannot read the outcomes ({exc})", file=sys.stderr)
        return 2
    faults = {f.strip() for f in args.faults.split(",") if f.strip()}
    chosen = [o for o in outcomes if o["method"] == args.method and (o["fault_id"] in faults or
                                                                     (o["fault_id"] is None and o["scored"]))]
    if not any(o["fault_id"] for o in chosen):
        print(f"error: no {args.method} outcome on faults {sorted(faults)} in {path}", file=sys.stderr)
        return 2
    s = score_method(args.method, chosen)
    comp, node, case, event = s.component, s.node, s.case_detection, s.event_detection
    print(f"{args.method} on {comp.n if comp else 0} faulty cases of {', '.join(sorted(faults))} "
          f"and {case.n_clean if case else 0} clean ones ({path})")
    if comp:
        print(f"  component AC@1 {_fmt(comp.ac[1], comp.ac_ci.get(1))}  AC@3 {_fmt(comp.ac[3], comp.ac_ci.get(3))}  "
              f"Avg@5 {_fmt(comp.avg, comp.avg_ci)}")
    if node:
        print(f"  node AC@1 {_fmt(node.ac[1], node.ac_ci.get(1))}")
    for name, det in (("case", case), ("event", event)):
        if det:
            print(f"  {name} precision {_fmt(det.precision, det.ci.get('precision'))}  "
                  f"recall {_fmt(det.recall, det.ci.get('recall'))}  FPR {_fmt(det.fpr, det.ci.get('fpr'))}")
    for fault, levels in s.per_fault.items():
        c = levels["component"]
        print(f"  {fault}: {c.n if c else 0} cases, component AC@1 {_fmt(c.ac[1] if c else None)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
