"""Trivial baselines: the seeded random ranking sits at chance, the constant ranking never changes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from chaosbench.baselines.trivial import constant_ranking, random_ranking
from chaosbench.case import Topology
from chaosbench.score.ranking import ac_at_k, chance_ac_at_k

COMPONENTS = ("ingress", "node-0", "node-1", "rank-0", "rank-1", "rank-2", "rank-3")


@dataclass
class StubCase:
    path: Path
    topology: Topology

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def case_id(self) -> str:  # the random ranking is seeded by the case id (CaseView.case_id)
        return self.path.name


def _case(i: int) -> StubCase:
    return StubCase(Path(f"/data/case-{i:04d}"), Topology("local", "mini", (), (), {}, COMPONENTS))


def test_random_is_a_seeded_permutation():
    a, b = random_ranking(_case(1)), random_ranking(_case(1))
    assert a.components() == b.components()
    assert sorted(a.components()) == sorted(COMPONENTS)
    assert random_ranking(_case(1), seed=1).components() != a.components() or \
        random_ranking(_case(1), seed=2).components() != a.components()


def test_random_ac_sits_at_chance():
    n = 3000
    answers = [COMPONENTS[i % len(COMPONENTS)] for i in range(n)]
    rankings = [random_ranking(_case(i)).components() for i in range(n)]
    for k in (1, 3):
        chance = chance_ac_at_k([len(COMPONENTS)] * n, k)
        assert ac_at_k(rankings, answers, k) == pytest.approx(chance, abs=0.03)


def test_constant_is_the_same_everywhere():
    assert constant_ranking(_case(1)).components() == constant_ranking(_case(2)).components() == sorted(COMPONENTS)
