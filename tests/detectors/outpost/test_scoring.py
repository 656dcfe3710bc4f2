from __future__ import annotations

import pandas as pd
import pytest

from chaosbench.detectors.outpost.scoring import case_level, event_level


def _units() -> pd.DataFrame:
    # rank-0 and rank-1, 10 steps of 1 s each starting at t = 100 s (times in us)
    rows = [(f"rank-{r}", (100 + s) * 1e6, 0.9e6) for r in (0, 1) for s in range(10)]
    return pd.DataFrame(rows, columns=["component", "ts", "dur"])


def test_event_level_counts() -> None:
    truth = pd.DataFrame([("rank-1", 105.0, 108.95)], columns=["component", "start", "end"])
    detected = pd.DataFrame(
        [("rank-1", 105.1e6, 10.0), ("rank-1", 105.2e6, 10.0),  # step 5: one unit, two events
         ("rank-1", 106.5e6, 10.0),  # step 6
         ("rank-0", 106.5e6, 10.0),  # wrong component
         ("rank-1", 101.5e6, 10.0)],  # before the fault
        columns=["component", "ts", "dur"])
    m = event_level(detected, _units(), truth)
    assert m["precision"] == pytest.approx(3 / 5)
    assert (m["units_tp"], m["units_fn"]) == (2, 2)  # positive units: rank-1 steps 5..8
    assert m["recall"] == pytest.approx(0.5)
    assert (m["units_fp"], m["units_tn"]) == (2, 14)
    assert m["fpr"] == pytest.approx(2 / 16)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.5 / 1.1)


def test_event_level_clean_case_and_nothing_detected() -> None:
    empty_truth = pd.DataFrame(columns=["component", "start", "end"])
    nothing = pd.DataFrame(columns=["component", "ts", "dur"])
    m = event_level(nothing, _units(), empty_truth)
    assert m["precision"] is None and m["recall"] is None and m["fpr"] == 0.0
    one = pd.DataFrame([("rank-0", 100.5e6, 1.0)], columns=["component", "ts", "dur"])
    assert event_level(one, _units(), empty_truth)["fpr"] == pytest.approx(1 / 20)


def test_case_level_and_time_to_detection() -> None:
    cases = pd.DataFrame({"truth": [True, True, True, False, False],
                          "verdict": [True, True, False, True, False],
                          "start": [10.0, 20.0, 30.0, None, None],
                          "detected_at": [12.0, 21.0, None, 5.0, None]})
    m = case_level(cases)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(0.5)
    assert m["ttd_mean_s"] == pytest.approx(1.5) and m["ttd_median_s"] == pytest.approx(1.5)
