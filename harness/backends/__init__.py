"""Backends: where the system under test runs. Each entry is a ``deploy(scenario, run_dir, **kw)`` returning a
running testbed that satisfies the backend contract, ``harness.backends.base.Testbed``."""

from __future__ import annotations

from harness.registry import Registry

BACKENDS: Registry = Registry("backend")
BACKENDS.register("local", "harness.backends.local:deploy_local")
BACKENDS.register("k8s", "harness.backends.k8s:deploy_k8s")

__all__ = ["BACKENDS"]
