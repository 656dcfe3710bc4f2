"""Analyzer metrics: references for every fault, ROUGE-L, valid-format rate and accuracies."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaosbench.case import CaseView, read_ground_truth
from chaosbench.detectors.analyzer import detect
from chaosbench.detectors.analyzer.metrics import (
    normalize_chain,
    references,
    rouge_l,
    score_case,
    strip_evidence,
    summarize,
    valid_format,
    valid_format_rate,
)
from chaosbench.detectors.analyzer.output import no_anomaly, render
from chaosbench.detectors.api import Result
from chaosbench.faults.catalog import FAULT_IDS, FAULTS


def test_a_reference_chain_for_every_fault():
    refs = references()
    assert set(refs) == set(FAULT_IDS)
    for fid, ref in refs.items():
        assert ref.category == FAULTS[fid].fault_class and ref.root == FAULTS[fid].target
        assert ref.chain[0].kind == "symptom" and ref.chain[-1].kind == "cause"


def test_strip_evidence_and_normalize():
    text = "peers wait for rank-2 (observed: x 1 -> 2 (z=+3.0)) in all-reduce (expected, not observed). done"
    assert strip_evidence(text) == "peers wait for rank-2 in all-reduce. done"
    assert normalize_chain("node-12 and rank-3  wait") == "node and rank wait"


def test_rouge_l_orders_chains_by_similarity():
    ref = references()["gpu-clock-lock"].text()
    assert rouge_l(ref, ref) == pytest.approx(1.0)
    close = "Peer ranks wait in every all-reduce for rank-1. The SM clock of rank-1 is locked low."
    far = "Host memory of node-0 is exhausted and pages are reclaimed."
    assert rouge_l(close, ref) > rouge_l(far, ref) + 0.15
    assert 0.0 <= rouge_l(far, ref) < 0.3


def test_valid_format_rate():
    good = render(no_anomaly("x"))
    assert valid_format(good) and not valid_format("nope") and not valid_format(None)
    assert valid_format_rate([good, "nope", good, None]) == 0.5
    assert valid_format_rate([]) == 0.0


def test_score_and_summarize(make_case):
    scores = []
    for fault in ("gpu-clock-lock", "cpu-throttle", None):
        path = make_case(fault)
        scores.append(score_case(path.name, detect(CaseView(path)), read_ground_truth(path)))
    failed = make_case("nccl-hang")
    scores.append(score_case("x", Result.failure("kat-analyzer", "boom"), read_ground_truth(failed)))
    table = summarize(scores)
    assert table["gpu-clock-lock"]["fault_class_accuracy"] == 1.0 and table["gpu-clock-lock"]["cases"] == 1
    assert 0.2 < table["gpu-clock-lock"]["rouge_l"] < 1.0
    assert table["none"]["component_accuracy"] == 1.0 and table["none"]["rouge_l"] is None
    assert table["nccl-hang"]["valid_format_rate"] == 0.0 and table["nccl-hang"]["fault_class_accuracy"] == 0.0
    assert table["all"]["cases"] == 4 and table["all"]["valid_format_rate"] == 0.75
    assert table["all"]["fault_class_accuracy"] == 0.75 and table["all"]["attempt_valid_rate"] == 0.75


def test_attempt_rate_counts_every_llm_answer():
    from chaosbench.detectors.analyzer.output import no_anomaly

    ok = Result("kat-analyzer", explanation=render(no_anomaly("x")),
                extra={"format_attempts": 3, "format_valid_attempts": 1})
    s = score_case("c", ok, {"fault_id": None, "component": None})  # type: ignore[typeddict-item]
    assert s.valid and not s.first_try_valid
    row = summarize([s])["none"]
    assert row["valid_format_rate"] == 1.0 and row["first_try_valid_rate"] == 0.0
    assert row["attempt_valid_rate"] == pytest.approx(1 / 3)


def test_wrong_answer_counts_wrong(make_case, tmp_path: Path):
    path = make_case("cpu-throttle")
    result = detect(CaseView(path))
    truth = dict(read_ground_truth(path), fault_id="cpu-contention", component="node-0")
    s = score_case("c", result, truth)  # type: ignore[arg-type]
    assert s.valid and s.predicted_fault == "cpu-throttle"
    table = summarize([s])["cpu-contention"]
    assert table["fault_class_accuracy"] == 0.0 and table["category_accuracy"] == 1.0
    assert table["component_accuracy"] == 0.0
