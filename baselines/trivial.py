"""Trivial baselines, always reported: a seeded random ranking and a constant ranking.

Both rank the case's candidate components (topology.components, else data.csv's column prefixes).
The random one draws a permutation from a seed mixed with the case id, so reruns give the same answer.
The constant one ranks the components in sorted order, whatever the case.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING

from chaosbench.baselines.inputs import case_components
from chaosbench.detectors.api import RankedComponent, Result

if TYPE_CHECKING:
    from chaosbench.case import CaseView

SEED = 0


def _ranking(components: list[str]) -> tuple[RankedComponent, ...]:
    n = len(components)
    return tuple(RankedComponent(component=c, score=float(n - i)) for i, c in enumerate(components))


def random_ranking(case: CaseView, seed: int = SEED) -> Result:
    comps = sorted(case_components(case))
    digest = hashlib.sha256(f"{seed}:{case.case_id}".encode()).digest()
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(comps)
    return Result(method="random", ranking=_ranking(comps), extra={"seed": seed})


def constant_ranking(case: CaseView) -> Result:
    return Result(method="constant", ranking=_ranking(sorted(case_components(case))))
