"""Case-level and event-level detection scores on hand-made verdicts and events."""

from __future__ import annotations

import pytest

from chaosbench.score.detection import EventCase, case_detection, event_detection, event_matches, time_to_detection

RANK_NODE = {"rank-0": "node-0", "rank-1": "node-0", "rank-2": "node-1"}


def test_case_detection_counts():
    # faulty: flagged, flagged, missed; clean: flagged (FP), quiet, no verdict (a miss: FP)
    s = case_detection([True, True, False, True, False, None], [True, True, True, False, False, False])
    assert (s.tp, s.fn, s.fp, s.tn) == (2, 1, 2, 1)
    assert s.precision == pytest.approx(2 / 4)
    assert s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert s.fpr == pytest.approx(2 / 3)
    assert case_detection([None, None], [True, False]) is None  # no verdict at all: not a detecting method


def test_failed_runs_are_misses():
    assert case_detection([True, None], [True, True]).recall == 0.5  # a failed run on a faulty case: FN
    s = case_detection([True, None], [True, False])  # a failed run on a clean case: the wrong verdict, FP
    assert (s.fp, s.tn, s.fpr) == (1, 0, 1.0)
    ev = event_detection([EventCase(True, 2, 1), EventCase(True, 0, 0, failed=True), EventCase(False, 0, 0, failed=True),
                          EventCase(False, 0, 0)])
    assert (ev.tp, ev.fn, ev.fp, ev.tn) == (1, 1, 1, 1) and ev.recall == 0.5 and ev.fpr == 0.5


def test_detection_scores_carry_intervals():
    s = case_detection([True] * 6 + [False] * 4, [True] * 8 + [False] * 2)
    lo, hi = s.ci["recall"]
    assert lo <= s.recall <= hi and lo < hi
    assert s.ci["fpr"] == [0.0, 0.0]  # every clean case quiet in every resample


def test_case_detection_without_clean_runs_has_no_fpr():
    s = case_detection([True, False], [True, True])
    assert s.fpr is None and s.precision == 1.0 and s.recall == 0.5


def test_event_matches_place_and_window():
    window = (1_700_000_200.0, 1_700_000_260.0)
    inside = 1_700_000_210.0 * 1e6
    assert event_matches("rank-2", inside, 1000, "rank-2", window, RANK_NODE)
    assert not event_matches("rank-1", inside, 1000, "rank-2", window, RANK_NODE)  # wrong rank
    assert event_matches("rank-1", inside, 1000, "node-0", window, RANK_NODE)  # a rank of the faulty node
    assert not event_matches("rank-2", 1_700_000_100.0 * 1e6, 1000, "rank-2", window, RANK_NODE)  # before
    assert event_matches("rank-2", 12_345.0, 10, "rank-2", window, RANK_NODE)  # relative clock: place only
    assert not event_matches("rank-2", inside, 10, None, window, RANK_NODE)  # clean case


def test_event_detection():
    s = event_detection([EventCase(True, 4, 3), EventCase(True, 2, 0), EventCase(False, 1, 0), EventCase(False, 0, 0)])
    assert s.precision == pytest.approx(3 / 7)
    assert s.recall == pytest.approx(0.5)
    assert s.fpr == pytest.approx(0.5)
    assert event_detection([EventCase(True, 0, 0)]) is None


def test_time_to_detection():
    t = time_to_detection([105.0, None, 130.0], [100.0, 100.0, 100.0])
    assert t == {"n": 2, "mean_s": 17.5, "median_s": 17.5}
    assert time_to_detection([None], [1.0])["n"] == 0
