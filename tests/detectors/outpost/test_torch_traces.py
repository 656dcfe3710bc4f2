"""Real torch.profiler traces from two gloo ranks on this machine (seconds to a minute)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaosbench.detectors.outpost import outpost


@pytest.mark.slow
def test_slowed_gloo_rank_in_real_profiler_traces(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from chaosbench.detectors.outpost.torchgen import generate

    meta = generate(tmp_path, ranks=2, steps=30, layers=4, slow_rank=1, factor=4, fault_step=15)
    assert json.loads((tmp_path / "meta.txt").read_text())["split_us"] == meta["split_us"]
    rep = outpost(tmp_path, split=meta["split_us"] / 1e6)
    assert rep.anomalous
    assert rep.ranking[0].component == "rank-1"
    assert any(e.name == "mlp" or e.path.endswith("mlp") or " > mlp > " in e.path for e in rep.events[:10])
