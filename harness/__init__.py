"""chaosbench: a chaos-engineering benchmark for root-cause analysis of distributed LLM inference.

What a user or a plugin author needs, from one place (imported on first use, so ``import chaosbench`` stays cheap)::

    import chaosbench

    run_dir = chaosbench.run("scenarios/suites/core.yaml", "results")   # deploy, inject, collect
    chaosbench.evaluate(run_dir)                                          # detectors, baselines, scores

    def detect(case: chaosbench.CaseView) -> chaosbench.Result: ...     # a detector plugin

Detectors and baselines install as ``chaosbench.detectors`` and ``chaosbench.baselines``.
"""

# ruff: noqa: F401
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "run": "chaosbench.runner",
    "evaluate": "chaosbench.evaluate",
    "CaseView": "chaosbench.case",
    "Result": "chaosbench.detectors.api",
    "RankedComponent": "chaosbench.detectors.api",
    "AnomalousEvent": "chaosbench.detectors.api",
    "FaultSpec": "chaosbench.faults.spec",
    "ParamRange": "chaosbench.faults.spec",
    "Params": "chaosbench.faults.spec",
    "Sampling": "chaosbench.faults.spec",
    "FaultStep": "chaosbench.scenario",
    "targets": "chaosbench.faults",  # resolving a step's target: targets.rank_pid(testbed, step), targets.node(...)
    "between": "chaosbench.types",
    "ClusterKit": "chaosbench.backends.k8s.faults",
    "ClusterParts": "chaosbench.backends.k8s.faults",
    "Handle": "chaosbench.faults.base",
    "Evidence": "chaosbench.faults.base",
    "base_handle": "chaosbench.faults.base",
    "Backend": "chaosbench.backends.base",
    "Testbed": "chaosbench.backends.base",
    "NodeInfo": "chaosbench.backends.base",
    "RankInfo": "chaosbench.backends.base",
    "Left": "chaosbench.backends.base",
    "ChaosbenchError": "chaosbench.errors",
    "InputInvalid": "chaosbench.errors",
    "PreflightFailed": "chaosbench.errors",
    "PluginInvalid": "chaosbench.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # the same names for type checkers (re-exports: __all__)
    from chaosbench.backends.base import Backend, Left, NodeInfo, RankInfo, Testbed
    from chaosbench.backends.k8s.faults import ClusterKit, ClusterParts
    from chaosbench.case import CaseView
    from chaosbench.detectors.api import AnomalousEvent, RankedComponent, Result
    from chaosbench.errors import ChaosbenchError, InputInvalid, PluginInvalid, PreflightFailed
    from chaosbench.evaluate import evaluate
    from chaosbench.faults import targets
    from chaosbench.faults.base import Evidence, Handle, base_handle
    from chaosbench.faults.spec import FaultSpec, ParamRange, Params, Sampling
    from chaosbench.runner import run
    from chaosbench.scenario import FaultStep
    from chaosbench.types import between


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'chaosbench' has no attribute {name!r}")
    module = import_module(_EXPORTS[name])
    value = getattr(module, name) if hasattr(module, name) else import_module(f"{module.__name__}.{name}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
