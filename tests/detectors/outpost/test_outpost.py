"""End to end on generated multi-rank traces, each with a clear expected answer."""

from __future__ import annotations

import pytest

from chaosbench.case import CaseView
from chaosbench.detectors.api import Result, run_detector
from chaosbench.detectors.outpost import detect, outpost
from chaosbench.detectors.outpost.synth import Slowdown, SynthSpec
from chaosbench.detectors.outpost.waits import BUSY_PREFIX


@pytest.mark.parametrize("factor", [1.3, 2.0, 5.0])
def test_one_slowed_rank_is_found_and_ranked_first(make_case, factor: float) -> None:
    case, truth = make_case(f"slow{factor}", SynthSpec(ranks=4, steps=30, seed=int(factor * 10),
                                                       slowdowns=(Slowdown((2,), factor, 15, 29),)))
    rep = outpost(case / "traces", split=truth["inject_time"])
    assert rep.anomalous
    assert rep.ranking[0].component == "rank-2"
    assert rep.ranking[0].score > 5 * max((r.score for r in rep.ranking[1:]), default=0.0)
    on_rank2 = [e for e in rep.events if e.component == "rank-2"]
    assert len(on_rank2) >= 0.9 * len(rep.events)
    assert all(e.step >= 15 for e in on_rank2)
    # the deepest anomalous events: the slowed aten ops, not mlp / layer / engine.step above them
    # (and the thread's busy time per step, an aggregate of them: waits.with_busy)
    assert {e.name for e in on_rank2 if not e.name.startswith(BUSY_PREFIX)} <= {"aten::linear", "aten::gelu"}
    assert all(e.path.startswith("engine.step > model.forward > layer.") for e in on_rank2
               if not e.name.startswith(BUSY_PREFIX))
    assert all(e.dur > e.expected_dur for e in rep.events)


def test_slowed_rank_in_some_steps_only(make_case) -> None:
    case, truth = make_case("partial", SynthSpec(ranks=4, steps=30, seed=4, slowdowns=(Slowdown((3,), 2.0, 20, 23),)))
    rep = outpost(case / "traces", split=truth["inject_time"])
    assert rep.anomalous and rep.ranking[0].component == "rank-3"
    steps = {e.step for e in rep.events if e.component == "rank-3"}
    assert steps == {20, 21, 22, 23}
    assert rep.detected_at == pytest.approx(truth["start"], abs=0.01)


def test_all_ranks_slowed_at_once_needs_the_history(make_case) -> None:
    case, truth = make_case("all", SynthSpec(ranks=4, steps=30, seed=5,
                                             slowdowns=(Slowdown((0, 1, 2, 3), 3.0, 15, 29),)))
    with_history = outpost(case / "traces", split=truth["inject_time"])
    assert with_history.anomalous
    assert {r.component for r in with_history.ranking[:4]} == {"rank-0", "rank-1", "rank-2", "rank-3"}
    cross_only = outpost(case / "traces")  # no history: every rank looks like its peers
    assert not cross_only.anomalous


def test_two_ranks(make_case) -> None:
    case, truth = make_case("two", SynthSpec(ranks=2, steps=30, seed=6, slowdowns=(Slowdown((1,), 1.5, 15, 29),)))
    rep = outpost(case / "traces", split=truth["inject_time"])
    assert rep.anomalous and rep.ranking[0].component == "rank-1"
    # rank-0 waits in the allreduce for rank-1: a victim, not reported
    assert all(e.component == "rank-1" for e in rep.events)


@pytest.mark.parametrize("ranks", [2, 4, 8])
def test_clean_runs_raise_no_anomaly(make_case, ranks: int) -> None:
    case, truth = make_case(f"clean{ranks}", SynthSpec(ranks=ranks, steps=30, seed=40 + ranks))
    rep = outpost(case / "traces", split=truth["inject_time"])
    assert not rep.anomalous
    assert rep.n_localized <= 0.001 * rep.n_events


def test_real_traces_raise_no_anomaly(shared_traces) -> None:
    for name in ("kineto-recsys-2rank", "sglang-qwen3-8b-1rank"):
        rep = outpost(shared_traces / name)
        assert not rep.anomalous, name
        assert rep.n_localized <= 0.02 * rep.n_events, name


def test_single_file_with_every_rank(make_case) -> None:
    case, truth = make_case("onefile", SynthSpec(ranks=4, steps=30, seed=8, events_per_file=False,
                                                 slowdowns=(Slowdown((1,), 2.0, 15, 29),)))
    files = list((case / "traces").iterdir())
    assert len(files) == 1
    rep = outpost(files[0], split=truth["inject_time"])
    assert rep.anomalous and rep.ranking[0].component == "rank-1"  # from process_name metadata
    assert rep.ranking[0].worker == "4001"  # the raw pid


def test_detector_contract(make_case) -> None:
    case, truth = make_case("contract", SynthSpec(ranks=4, steps=30, seed=9, slowdowns=(Slowdown((0,), 2.0, 15, 29),)))
    result = run_detector("outpost", detect, CaseView(case))
    assert isinstance(result, Result) and result.status == "ok", result.error
    assert result.anomalous is True
    assert result.components()[0] == "rank-0"
    assert result.ranking[0].thread == "MainThread"
    assert result.events and all(e.component == "rank-0" for e in result.events)
    assert result.detected_at == pytest.approx(truth["start"], abs=0.01)
    assert result.runtime_s > 0
    assert Result.from_json(result.to_json()) == result


def test_detector_contract_without_traces_fails_cleanly(make_case) -> None:
    case, _ = make_case("notraces", SynthSpec(ranks=2, steps=4))
    for p in (case / "traces").iterdir():
        p.unlink()
    result = run_detector("outpost", detect, CaseView(case))
    assert result.status == "failed" and "no traces" in result.error
