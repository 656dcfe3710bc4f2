from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from chaosbench.detectors.outpost.synth import SynthSpec, write_case

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "traces"
SHARED_TRACES = REPO.parent / "shared" / "data" / "traces"


@pytest.fixture
def shared_traces() -> Path:
    if not SHARED_TRACES.is_dir():
        pytest.skip("../shared/data/traces is not next to the repository")
    return SHARED_TRACES


@pytest.fixture
def make_case(tmp_path: Path) -> Callable[..., tuple[Path, dict]]:
    """Write a generated case directory; returns (path, ground truth)."""

    def make(name: str, spec: SynthSpec) -> tuple[Path, dict]:
        path = tmp_path / name
        return path, write_case(spec, path)

    return make
