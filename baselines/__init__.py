"""Baselines: RCAEval adapters (``baselines.rcaeval``) and trivial rankings (``baselines.trivial``)."""
