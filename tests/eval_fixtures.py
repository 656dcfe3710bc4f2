"""Fixture detectors for the evaluation tests, referenced as ``eval_fixtures:<name>`` (tests/ is on sys.path)."""

from __future__ import annotations

import sys
import time

from chaosbench.detectors.api import AnomalousEvent, RankedComponent, Result


def raising(case):
    raise RuntimeError("fixture detector exploded")


def hanging(case):
    time.sleep(3600)


def not_a_result(case):
    return ["rank-0"]


def two_args(case, other):
    return None


def flags_everything(case):
    """Blames ingress, says anomalous, and reports one event on rank-0 at the injection time."""
    ev = AnomalousEvent(component="rank-0", worker="1", thread="1", name="aten::mm", ts=case.inject_time * 1e6 + 5e6,
                        dur=9000.0, expected_dur=1000.0, score=7.5, path="step/aten::mm")
    return Result(method="flags", ranking=(RankedComponent("ingress", 1.0),), anomalous=True, events=(ev,),
                  detected_at=case.inject_time + 5, explanation="rank-0 slow -> allreduce waits -> ingress latency")


def fake_rcaeval_fallback(data, inject_time=None, dataset=None, **kwargs):
    """What RCAEval's @rca wrapper does when the method raises: complain on stderr, return the column order."""
    print("fake_rcaeval_fallback failed (ValueError: singular matrix); returning the unranked column order",
          file=sys.stderr)
    cols = [c for c in data.columns if c != "time"]
    return {"ranks": cols}


def fake_rcaeval_input_order(data, inject_time=None, dataset=None, **kwargs):
    """An empty causal graph: no complaint, but the 'ranking' is the input column order."""
    return {"ranks": [c for c in data.columns if c != "time"]}


MARKER = "PLANTED-ANSWER"


def snoop(case):
    """A cheater that reads every file up to three directories above its case, looking for the planted marker."""
    from pathlib import Path

    seen = []
    for up in (case.path, *list(Path(case.path).parents)[:3]):
        for f in Path(up).rglob("*"):
            try:
                if f.is_file() and MARKER.encode() in f.read_bytes():
                    seen.append(str(f))
            except OSError:
                continue
    text = " ".join(str(v) for v in case.manifest.values()) + " ".join(str(e) for e in case.events())
    if MARKER in text:
        seen.append("CaseView")
    return Result(method="snoop", ranking=(), extra={"seen": sorted(set(seen))})
