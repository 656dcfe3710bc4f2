"""Baselines: RCAEval adapters (``chaosbench.baselines.rcaeval``) and trivial rankings (``chaosbench.baselines.trivial``)."""
