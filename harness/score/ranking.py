"""Ranking accuracy, as RCAEval defines it (``RCAEval.benchmark.evaluation.Evaluator``).

- AC@k: share of cases whose answer is among the first k ranked items.
- Avg@k: mean of AC@1..AC@k.
- chance AC@k: what a uniformly random ranking over the same n candidates reaches, min(k, n) / n per case
  (0 when the answer is not a candidate), averaged over cases; chance Avg@k likewise.
- lift@k: Avg@k minus chance Avg@k (0 = no better than random).

A failed method run is an empty ranking: it counts as a miss, never as an answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import comb


def rank_of(ranked: Sequence[str], answer: str) -> int | None:
    """1-based position of ``answer`` in ``ranked``, or None."""
    for i, item in enumerate(ranked, start=1):
        if item == answer:
            return i
    return None


def hit_at_k(ranked: Sequence[str], answer: str, k: int) -> bool:
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    return answer in ranked[:k]


def ac_at_k(rankings: Sequence[Sequence[str]], answers: Sequence[str], k: int) -> float | None:
    """AC@k over cases; None when there are no cases."""
    if len(rankings) != len(answers):
        raise ValueError("one answer per ranking")
    if not rankings:
        return None
    return sum(hit_at_k(r, a, k) for r, a in zip(rankings, answers)) / len(rankings)


def avg_at_k(rankings: Sequence[Sequence[str]], answers: Sequence[str], k: int) -> float | None:
    """Avg@k = (AC@1 + ... + AC@k) / k."""
    parts = [ac_at_k(rankings, answers, j) for j in range(1, k + 1)]
    if any(p is None for p in parts):
        return None
    return sum(parts) / k  # type: ignore[arg-type]


def chance_hit(n: int, k: int, m: int = 1) -> float:
    """Probability that a uniformly random order of n candidates puts one of m right answers in the top k.

    For m = 1 this is RCAEval's min(k, n) / n.
    """
    if n <= 0 or m <= 0:
        return 0.0
    m = min(m, n)
    if m == 1:
        return min(k, n) / n
    return 1.0 - comb(n - m, min(k, n)) / comb(n, min(k, n))


def chance_ac_at_k(
    n_candidates: Sequence[int],
    k: int,
    answer_in_candidates: Sequence[bool] | None = None,
    n_answers: Sequence[int] | None = None,
) -> float | None:
    """Expected AC@k of a uniformly random ranking over each case's candidates.

    ``answer_in_candidates`` False makes a case count 0; ``n_answers`` gives how many items count as right
    (default 1), e.g. several acceptable metric columns.
    """
    if not n_candidates:
        return None
    found = answer_in_candidates if answer_in_candidates is not None else [True] * len(n_candidates)
    ms = n_answers if n_answers is not None else [1] * len(n_candidates)
    return sum(chance_hit(n, k, m) if f else 0.0 for n, f, m in zip(n_candidates, found, ms)) / len(n_candidates)


def chance_avg_at_k(
    n_candidates: Sequence[int],
    k: int,
    answer_in_candidates: Sequence[bool] | None = None,
    n_answers: Sequence[int] | None = None,
) -> float | None:
    parts = [chance_ac_at_k(n_candidates, j, answer_in_candidates, n_answers) for j in range(1, k + 1)]
    if any(p is None for p in parts):
        return None
    return sum(parts) / k  # type: ignore[arg-type]


def to_node_level(ranked: Sequence[str], rank_node: Mapping[str, str]) -> list[str]:
    """Map each ranked rank-N to its node (others unchanged) and keep the first occurrence.

    A node fault blamed on a rank of that node counts as a hit at node level.
    """
    seen: dict[str, None] = {}
    for item in ranked:
        seen.setdefault(rank_node.get(item, item), None)
    return list(seen)
