"""Evaluation internals: case discovery (run, older and RCAEval layouts; splits), blind copies, the method
catalogue, the fan-out, outcome collection, and export/import of a run archive.

The public entry point is ``chaosbench.evaluate.evaluate``.
"""
