"""Scores: pure functions over rankings, verdicts and runtimes (no I/O).

- ``ranking``: AC@k, Avg@k, chance and lift (RCAEval's definitions, ``RCAEval.benchmark.evaluation``).
- ``detection``: case-level and event-level precision/recall/F1/FPR, time to detection.
- ``aggregate``: per-method scores overall and per fault type from per-case outcomes.
"""

from chaosbench.score.aggregate import CaseOutcome, MethodScores, score_methods
from chaosbench.score.detection import DetectionScores, case_detection, event_detection
from chaosbench.score.ranking import ac_at_k, avg_at_k, chance_ac_at_k, chance_avg_at_k, rank_of, to_node_level

__all__ = [
    "CaseOutcome",
    "DetectionScores",
    "MethodScores",
    "ac_at_k",
    "avg_at_k",
    "case_detection",
    "chance_ac_at_k",
    "chance_avg_at_k",
    "event_detection",
    "rank_of",
    "score_methods",
    "to_node_level",
]
