"""Detectors: the contract (``chaosbench.detectors.api``), KAT Outpost, KAT Analyzer and plugin loading."""
