"""AC@k, Avg@k, chance and lift on hand-made rankings, checked by hand and against RCAEval's Evaluator."""

from __future__ import annotations

import pytest

from chaosbench.score.ranking import (
    ac_at_k,
    avg_at_k,
    chance_ac_at_k,
    chance_avg_at_k,
    chance_hit,
    hit_at_k,
    rank_of,
    to_node_level,
)

RANKINGS = [
    ["rank-2", "node-1", "ingress"],  # hit at 1
    ["ingress", "rank-2", "node-0"],  # hit at 2
    ["node-0", "node-1", "ingress", "rank-0", "rank-3"],  # hit at 5
    [],  # a failed run: a miss everywhere
]
ANSWERS = ["rank-2", "rank-2", "rank-3", "node-1"]


def test_ac_at_k_by_hand():
    assert ac_at_k(RANKINGS, ANSWERS, 1) == 0.25
    assert ac_at_k(RANKINGS, ANSWERS, 2) == 0.5
    assert ac_at_k(RANKINGS, ANSWERS, 4) == 0.5
    assert ac_at_k(RANKINGS, ANSWERS, 5) == 0.75
    assert ac_at_k([], [], 1) is None


def test_avg_at_k_is_mean_of_ac():
    assert avg_at_k(RANKINGS, ANSWERS, 5) == pytest.approx((0.25 + 0.5 + 0.5 + 0.5 + 0.75) / 5)
    assert avg_at_k(RANKINGS, ANSWERS, 1) == 0.25


def test_matches_rcaeval_evaluator():
    from RCAEval.benchmark.evaluation import Evaluator
    from RCAEval.classes.graph import Node

    ev = Evaluator()
    for ranking, answer in zip(RANKINGS, ANSWERS):
        ev.add_case([Node(r, "m") for r in ranking], Node(answer, "m"), n_candidates=7)
    for k in range(1, 6):
        assert ac_at_k(RANKINGS, ANSWERS, k) == pytest.approx(ev.accuracy(k))
        assert chance_ac_at_k([7] * 4, k) == pytest.approx(ev.chance_accuracy(k))
    assert avg_at_k(RANKINGS, ANSWERS, 5) == pytest.approx(ev.average(5))
    assert chance_avg_at_k([7] * 4, 5) == pytest.approx(ev.chance_average(5))
    assert avg_at_k(RANKINGS, ANSWERS, 5) - chance_avg_at_k([7] * 4, 5) == pytest.approx(ev.lift(5))


def test_chance():
    assert chance_ac_at_k([7], 1) == pytest.approx(1 / 7)
    assert chance_ac_at_k([4, 10], 5) == pytest.approx((1.0 + 0.5) / 2)
    assert chance_ac_at_k([4, 4], 1, answer_in_candidates=[True, False]) == pytest.approx(0.125)
    assert chance_hit(10, 3, 2) == pytest.approx(1 - (8 * 7 * 6) / (10 * 9 * 8))  # either of 2 right items
    assert chance_hit(0, 1) == 0.0
    assert chance_ac_at_k([], 1) is None


def test_rank_and_hit():
    assert rank_of(["a", "b"], "b") == 2
    assert rank_of(["a"], "z") is None
    assert hit_at_k(["a", "b"], "b", 2) and not hit_at_k(["a", "b"], "b", 1)
    with pytest.raises(ValueError):
        hit_at_k(["a"], "a", 0)
    with pytest.raises(ValueError):
        ac_at_k([["a"]], [], 1)


def test_node_level_folds_ranks_into_nodes():
    rank_node = {"rank-0": "node-0", "rank-1": "node-0", "rank-2": "node-1"}
    assert to_node_level(["rank-2", "rank-0", "node-1", "ingress", "rank-1"], rank_node) == ["node-1", "node-0", "ingress"]
    # a node fault blamed on one of its ranks is a node-level hit
    assert ac_at_k([to_node_level(["rank-1", "node-1"], rank_node)], ["node-0"], 1) == 1.0
