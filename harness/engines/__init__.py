"""Inference engines the local testbed can deploy (the system under test).

Listing them imports nothing heavy: entries are lazy ``module:attr`` references to each
engine's ``deploy`` function.
"""

from __future__ import annotations

from chaosbench.registry import Registry

ENGINES: Registry = Registry("engine")
ENGINES.register("mini", "chaosbench.engines.mini:deploy")
ENGINES.register("vllm", "chaosbench.engines.vllm:deploy")

__all__ = ["ENGINES"]
