"""Detectors: the contract (``detectors.api``), KAT Outpost, KAT Analyzer and plugin loading."""
