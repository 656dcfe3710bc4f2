"""Inference engines the local testbed can deploy (the system under test).

Listing them imports nothing heavy: entries are lazy ``module:attr`` references to each
engine's ``deploy`` function.
"""

from __future__ import annotations

from harness.registry import Registry

ENGINES: Registry = Registry("engine")
ENGINES.register("mini", "harness.engines.mini:deploy")
ENGINES.register("vllm", "harness.engines.vllm:deploy")

__all__ = ["ENGINES"]
