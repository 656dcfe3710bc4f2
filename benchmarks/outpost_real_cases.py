"""KAT Outpost on every real case below a directory: verdict, ranking and hits per case, then AC@k and FPR.

    .venv/bin/python benchmarks/outpost_real_cases.py results/            # every completed case below results/
    .venv/bin/python benchmarks/outpost_real_cases.py DIR --lam 4 --json  # one JSON object per case, then the summary

Outpost runs through the detector contract (``detect(CaseView)``: traces, inject time, no ground truth). The ground
truth is read here only, to score: a node fault counts as a hit when a rank of that node is ranked (the scoring's
``to_node_level``), a rank fault only when that rank is. Scores come from ``chaosbench.score`` (AC@k, case-level and
event-level detection), not recomputed here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chaosbench.case import CaseView, find_cases, read_ground_truth  # noqa: E402
from chaosbench.detectors.outpost import DEFAULT_LAMBDA, outpost, stopped_first, to_result  # noqa: E402
from chaosbench.score.detection import EventCase, case_detection, event_detection, event_matches  # noqa: E402
from chaosbench.score.ranking import ac_at_k, rank_of, to_node_level  # noqa: E402


def run_case(path: Path, lam: float) -> dict:
    view = CaseView(path)
    t0 = time.perf_counter()
    rep = stopped_first(outpost(view.trace_files(), "pid", lam, split=view.inject_time), view)  # = detect(view)
    runtime = time.perf_counter() - t0
    res = to_result(rep)
    truth = read_ground_truth(path)  # scoring only: never given to the detector
    rank_node = dict(view.topology.rank_node)
    answer = truth.get("component")
    ranked = res.components()
    is_node = answer is not None and answer in set(rank_node.values())
    scored = to_node_level(ranked, rank_node) if is_node else ranked
    pos = rank_of(scored, answer) if answer else None
    window = (truth["start"], truth["end"] or float("inf")) if answer and truth.get("start") else None
    matching = sum(event_matches(e.component, e.ts, e.dur, answer, window, rank_node) for e in res.events)
    return {"case": path.name, "fault_id": truth.get("fault_id"), "truth": answer, "anomalous": res.anomalous,
            "top3": ranked[:3], "scored_ranking": scored, "rank_of_truth": pos,
            "hit1": bool(pos and pos <= 1), "hit3": bool(pos and pos <= 3), "runtime_s": runtime,
            "n_events": len(res.events), "n_matching": matching}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--lam", type=float, default=DEFAULT_LAMBDA)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [run_case(p, args.lam) for p in find_cases(args.root) if (p / "traces").is_dir()]
    for r in rows:
        if args.json:
            print(json.dumps(r))
            continue
        fid = r["fault_id"] or "clean"
        verdict = "ANOMALOUS" if r["anomalous"] else "normal"
        hits = "" if r["truth"] is None else f"rank={r['rank_of_truth']} hit@1={int(r['hit1'])} hit@3={int(r['hit3'])}"
        print(f"{r['case']:<34} {fid:<26} truth={str(r['truth']):<8} {verdict:<9} top3={','.join(r['top3']) or '-':<22} "
              f"{hits:<26} events={r['n_events']}/{r['n_matching']} {r['runtime_s']:.2f}s")
    faulty = [r for r in rows if r["truth"] is not None]
    answers = [r["truth"] for r in faulty]
    rankings = [r["scored_ranking"] for r in faulty]
    ac1, ac3 = ac_at_k(rankings, answers, 1), ac_at_k(rankings, answers, 3)
    cd = case_detection([r["anomalous"] for r in rows], [r["truth"] is not None for r in rows])
    ed = event_detection([EventCase(r["truth"] is not None, r["n_events"], r["n_matching"]) for r in rows])
    n_clean = len(rows) - len(faulty)
    summary = {"cases": len(rows), "faulty": len(faulty), "clean": n_clean, "lambda": args.lam,
               "ac1": ac1, "ac3": ac3,
               "case_recall": cd.recall if cd else None, "case_fpr": cd.fpr if cd else None,
               "case_fp": cd.fp if cd else None,
               "event_precision": ed.precision if ed else None, "event_recall": ed.recall if ed else None,
               "runtime_s_total": sum(r["runtime_s"] for r in rows)}
    if args.json:
        print(json.dumps({"summary": summary}))
        return

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    print(f"AC@1 {fmt(ac1)}  AC@3 {fmt(ac3)}  over {len(faulty)} fault cases (node faults: either rank of the node)")
    print(f"case level: recall {fmt(summary['case_recall'])} on {len(faulty)} fault cases, "
          f"FPR {fmt(summary['case_fpr'])} ({summary['case_fp']}/{n_clean} clean cases flagged)")
    print(f"event level: precision {fmt(summary['event_precision'])}, recall {fmt(summary['event_recall'])}; "
          f"runtime {summary['runtime_s_total']:.2f} s total")


if __name__ == "__main__":
    main()
