"""A step's target on a testbed: the ranks of a replica or a stage, and a rank fault fanned out over them
(chaosbench.faults.targets.fan_out), with a recording stand-in for the fault module (no processes, no root)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chaosbench.backends.base import layout_rank
from chaosbench.errors import PreflightFailed
from chaosbench.faults import journal, targets
from chaosbench.faults.base import Evidence, Handle, base_handle, injector
from chaosbench.faults.catalog import FAULTS
from chaosbench.scenario import Target, TopologySpec, load_scenario

TOPO = TopologySpec(nodes=2, tensor_parallel=2, pipeline_parallel=2, data_parallel=2)
REPO = Path(__file__).resolve().parents[2]
LAYOUT = REPO / "scenarios" / "layouts" / "dp2-pp2-tp2" / "gpu-power-cap.yaml"  # gpu-power-cap on replica-0.stage-1


class Recorder:
    """A rank fault module that records each call; ``unverified`` ranks never show the signal, ``broken`` ranks
    fail to recover."""

    SPEC = FAULTS["gpu-power-cap"]

    def __init__(self, unverified: set[str] = frozenset(), broken: set[str] = frozenset()):
        self.calls: list[tuple[str, str]] = []
        self.unverified, self.broken = unverified, broken

    def preflight(self, testbed: Any, step: Any) -> None:
        self.calls.append(("preflight", step.target.component))

    def prepare(self, testbed: Any, step: Any, key: str) -> Handle:
        self.calls.append(("prepare", step.target.component))
        return base_handle(self.SPEC, step, key)

    def inject(self, handle: Handle, testbed: Any) -> Handle:
        self.calls.append(("inject", handle["component"]))
        return handle

    def verify(self, handle: Handle, testbed: Any) -> Evidence | None:
        self.calls.append(("verify", handle["component"]))
        if handle["component"] in self.unverified:
            return None
        return Evidence("DCGM_FI_DEV_POWER_MGMT_LIMIT", 200.0, f"{handle['component']}: capped", {"w": 1.0}, at=5.0)

    def recover(self, handle: Handle) -> None:
        self.calls.append(("recover", handle["component"]))
        if handle["component"] in self.broken:
            raise OSError("control file gone")


def bed() -> SimpleNamespace:
    return SimpleNamespace(backend="local", ranks={f"rank-{r}": layout_rank(TOPO, r) for r in range(8)})


def step(target: dict) -> Any:
    s = load_scenario(LAYOUT).spec.faults[0]
    return s.model_copy(update={"target": Target.model_validate(target)})


def test_ranks_of_a_replica_and_a_stage_on_the_testbed():
    assert [r.name for r in targets.ranks(bed(), step({"replica": 1}))] == ["rank-4", "rank-5", "rank-6", "rank-7"]
    assert [r.name for r in targets.ranks(bed(), step({"replica": 0, "stage": 1}))] == ["rank-2", "rank-3"]
    assert [r.name for r in targets.ranks(bed(), step({"rank": 6}))] == ["rank-6"]
    empty = SimpleNamespace(ranks={"rank-0": layout_rank(TopologySpec(), 0)})
    with pytest.raises(PreflightFailed, match="target replica-1 holds no rank of this testbed"):
        targets.ranks(empty, step({"replica": 1}))


def test_fan_out_wraps_only_rank_faults_that_allow_more():
    assert isinstance(targets.fan_out(injector("gpu-clock-lock")), targets.RankFanout)
    for fid in ("nccl-hang", "gpu-xid-error", "cpu-contention", "network-delay"):
        assert targets.fan_out(injector(fid)) is injector(fid)


def test_a_stage_target_hits_each_of_its_ranks():
    mod = Recorder()
    fan = targets.RankFanout(mod)
    s = step({"replica": 0, "stage": 1})
    fan.preflight(bed(), s)
    handle = fan.prepare(bed(), s, "k1")
    assert handle["component"] == "replica-0.stage-1"
    assert [p["key"] for p in handle["parts"]] == ["k1.rank-2", "k1.rank-3"]
    handle = fan.inject(handle, bed())
    evidence = fan.verify(handle, bed())
    assert evidence is not None and evidence.detail == "replica-0.stage-1: rank-2: capped; rank-3: capped"
    assert evidence.extra == {"rank-2.w": 1.0, "rank-3.w": 1.0} and evidence.at == 5.0
    fan.recover(handle)
    assert mod.calls == [(verb, f"rank-{r}") for verb in ("preflight", "prepare", "inject", "verify", "recover")
                         for r in (2, 3)]


def test_a_rank_target_goes_straight_to_the_module():
    mod = Recorder()
    fan = targets.RankFanout(mod)
    s = step({"rank": 6})
    handle = fan.prepare(bed(), s, "k2")
    assert "parts" not in handle and handle["component"] == "rank-6"
    fan.inject(handle, bed())
    fan.verify(handle, bed())
    fan.recover(handle)
    assert [c for _, c in mod.calls] == ["rank-6"] * 4


def test_verified_only_when_every_rank_shows_the_signal_and_recovery_tries_every_rank():
    mod = Recorder(unverified={"rank-5"}, broken={"rank-4", "rank-6"})
    fan = targets.RankFanout(mod)
    handle = fan.inject(fan.prepare(bed(), step({"replica": 1}), "k3"), bed())
    assert fan.verify(handle, bed()) is None
    with pytest.raises(RuntimeError, match=r"rank-4: OSError: control file gone; rank-6: OSError"):
        fan.recover(handle)
    assert [c for v, c in mod.calls if v == "recover"] == ["rank-4", "rank-5", "rank-6", "rank-7"]


def test_the_journal_replays_a_fanned_out_handle(monkeypatch):
    mod = Recorder()
    handle = targets.RankFanout(mod).prepare(bed(), step({"replica": 0, "stage": 0}), "k4")
    monkeypatch.setattr("chaosbench.faults.base.injector", lambda fid: mod)
    journal._recover(dict(handle))
    assert mod.calls[-2:] == [("recover", "rank-0"), ("recover", "rank-1")]
