"""Evaluate KAT Analyzer on real case directories and print per-fault numbers.

    .venv/bin/python benchmarks/eval_analyzer.py CASES_DIR [--backend rules|openai] [--json]

For every completed case under CASES_DIR: run the analyzer (failures count as wrong), read the
ground truth (scoring only), and print per fault id: cases, valid-format rate (final and first
try, per attempt), fault-class / category / root-component accuracy, mean ROUGE-L against references/, and
the analyzer's mean runtime. Clean runs appear as fault "none".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chaosbench.case import CaseView, find_cases, read_ground_truth  # noqa: E402
from chaosbench.detectors.analyzer import explain  # noqa: E402
from chaosbench.detectors.analyzer.metrics import CaseScore, score_case, summarize  # noqa: E402
from chaosbench.detectors.api import run_detector  # noqa: E402
from chaosbench.errors import ChaosbenchError  # noqa: E402

COLUMNS = ("cases", "valid_format_rate", "first_try_valid_rate", "attempt_valid_rate", "fault_class_accuracy",
           "category_accuracy", "component_accuracy", "rouge_l")


def evaluate(root: Path, backend: str) -> tuple[list[CaseScore], list[dict], float]:
    scores, failures = [], []
    runtime = 0.0
    for path in find_cases(root):
        case = CaseView(path)
        result = run_detector("kat-analyzer", lambda c: explain(c, backend), case)
        runtime += result.runtime_s
        if result.status != "ok":
            failures.append({"case": str(path), "error": result.error})
        scores.append(score_case(path.name, result, read_ground_truth(path)))
    return scores, failures, runtime


def _cell(v: float | int | None) -> str:
    if v is None:
        return "-"
    return str(v) if isinstance(v, int) else f"{v:.3f}"


def print_table(table: dict[str, dict], failures: list[dict], runtime: float, n: int) -> None:
    header = ["fault"] + [c.replace("_accuracy", "_acc").replace("_rate", "") for c in COLUMNS]
    rows = [[fault] + [_cell(stats[c]) for c in COLUMNS] for fault, stats in table.items()]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))
    print(f"\n{n} cases, analyzer runtime {runtime:.2f} s total ({runtime / max(n, 1):.3f} s/case)")
    for f in failures:
        print(f"failed: {f['case']}: {f['error']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases_dir", type=Path)
    ap.add_argument("--backend", default="rules", choices=("rules", "openai"))
    ap.add_argument("--json", action="store_true", help="print the per-fault table and per-case scores as JSON")
    args = ap.parse_args(argv)
    if not args.cases_dir.is_dir():
        print(f"error: {args.cases_dir}: not a directory", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        scores, failures, runtime = evaluate(args.cases_dir, args.backend)
    except ChaosbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not scores:
        print(f"error: {args.cases_dir}: no completed case directories", file=sys.stderr)
        return 2
    table = summarize(scores)
    if args.json:
        print(json.dumps({"table": table, "cases": [s.__dict__ for s in scores], "failures": failures}, indent=2))
    else:
        print_table(table, failures, runtime, len(scores))
        print(f"wall time {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
