"""Evaluation internals: case discovery, the method catalogue, the fan-out, outcome collection.

The public entry point is ``harness.evaluate.evaluate``.
"""
