from __future__ import annotations

import os
from pathlib import Path

import pytest
from faultbed import FaultBed, make_bed


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, cgroups, qdiscs, iptables)")


@pytest.fixture(autouse=True)
def recovery_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test journals into its own recovery dir, never the machine's."""
    d = tmp_path / "recovery"
    monkeypatch.setenv("CHAOSBENCH_RECOVERY_DIR", str(d))
    return d


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> FaultBed:
    _need_root()
    b = make_bed(tmp_path_factory.mktemp("bed"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def gpu_bed(tmp_path_factory: pytest.TempPathFactory) -> FaultBed:
    _need_root()
    b = make_bed(tmp_path_factory.mktemp("gpubed"), with_prometheus=True)
    yield b
    b.close()
