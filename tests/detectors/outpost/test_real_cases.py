"""Outpost on traces cut from real local-testbed cases (tests/fixtures/real/<case>/).

Each fixture keeps a window around the verified injection time of one case of
results/20261204-164137-smoke (4 TP ranks, gloo, 2 shared CPU cores with Ray, Prometheus and Locust:
OS-scheduling noise common to every rank), only the fields Outpost reads. ``truth.json`` is the case's
answer, read here to score only. These cases were used to tune Outpost (self time, sustained
persistence, victims by excess, hang by excess time); gpu-clock-lock-r0 of the same run was not.
``clean-core`` is cut from results/20261204-165417-core/clean-r0 (ranks 0 and 1, 10 s before and
15 s after the injection time): the z-margin persistence rule flagged it (rank-0, layer.1 self time
anomalous in 49 of 454 steps after vs 20 of 320 before); the case verdict is now a global test over
the paths' Fisher tests (Simes), which this fixture was used to check.
"""

from __future__ import annotations

import json

import pytest

from chaosbench.cli import main
from chaosbench.detectors.outpost import outpost
from chaosbench.detectors.outpost.localize import LocalizeConfig, bh_reject, fisher_greater
from chaosbench.score.ranking import to_node_level

from .conftest import FIXTURES

REAL = FIXTURES.parent / "real"


def _run(name: str):
    case = REAL / name
    split = float((case / "inject_time.txt").read_text())
    topo = json.loads((case / "topology.json").read_text())
    truth = json.loads((case / "truth.json").read_text())
    return outpost(sorted((case / "traces").glob("rank-*.json.gz")), split=split), topo, truth


def test_real_clean_run_is_not_anomalous() -> None:
    rep, _, truth = _run("clean")
    assert truth["fault_id"] is None
    assert not rep.anomalous
    assert rep.ranking == () and rep.events == ()
    assert rep.n_events > 9000 and rep.n_anomalous > 0  # scheduling spikes are there, none is sustained


def test_real_clean_run_with_a_drifting_path_is_not_anomalous() -> None:
    """A clean run where one path's rate of anomalous steps drifts up after the injection time
    (rank-0 layer.1: 49/454 vs 20/320) is not a fault: with ~20 paths tested, one such p-value
    (~0.02) is what chance gives; the global test does not reject, even without the minimum effect."""
    rep, _, truth = _run("clean-core")
    assert truth["fault_id"] is None
    assert rep.n_anomalous > 0
    assert not rep.anomalous
    assert rep.ranking == () and rep.events == ()
    case = REAL / "clean-core"
    no_min_effect = outpost(sorted((case / "traces").glob("rank-*.json.gz")),
                            split=float((case / "inject_time.txt").read_text()), loc=LocalizeConfig(min_effect=0.0))
    assert not no_min_effect.anomalous


def test_fisher_and_simes_helpers() -> None:
    from scipy.stats import fisher_exact

    k1, n1, k0, n0 = [49, 3, 0, 10], [454, 10, 5, 10], [20, 0, 0, 10], [320, 20, 5, 0]
    p = fisher_greater(k1, n1, k0, n0)
    for i in range(3):
        ref = fisher_exact([[k1[i], n1[i] - k1[i]], [k0[i], n0[i] - k0[i]]], alternative="greater").pvalue
        assert p[i] == pytest.approx(ref, rel=1e-9)
    assert p[2] == 1.0 and p[3] == 1.0  # nothing anomalous after / no history
    # Benjamini-Hochberg step-up: the largest i with p_(i) <= i * q / m is 3 (0.03 <= 0.03)
    assert bh_reject([0.001, 0.02, 0.03, 0.5, 0.9], 0.05).tolist() == [True, True, True, False, False]
    assert not bh_reject([0.02, 0.5, 0.9], 0.05).any()  # Simes: min(3 * 0.02 / 1, ...) > 0.05
    assert bh_reject([0.02, 0.5, 0.9], 0.1).tolist() == [True, False, False]


def test_real_clean_trace_dir_on_the_cli_uses_the_case_injection_time(capsys) -> None:
    """``detect outpost <case>/traces``: without the split every rank's cross-worker spikes counted."""
    assert main(["detect", "outpost", str(REAL / "clean" / "traces"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["anomalous"] is False


def test_real_cpu_contention_blames_the_contended_node() -> None:
    rep, topo, truth = _run("cpu-contention")
    assert rep.anomalous
    ranks = [r.component for r in rep.ranking]
    nodes = to_node_level(ranks, topo["rank_node"])
    assert nodes[0] == truth["component"] == "node-1"
    # both ranks of node-1 come before the node-0 ranks that only waited for them in the all-reduce
    assert list(dict.fromkeys(ranks))[:2] in (["rank-2", "rank-3"], ["rank-3", "rank-2"])
    # the evidence: compute (self time), not collectives
    on_node1 = [e for e in rep.events if topo["rank_node"][e.component] == "node-1"]
    assert len(on_node1) >= 0.5 * len(rep.events)
    assert {e.name for e in on_node1[:10]} <= {"attention", "mlp", "layer.0", "layer.1", "model.forward", "engine.step"}


def test_real_rank_hang_is_detected() -> None:
    """SIGSTOP of one rank: every rank sits ~25 s in the same all-reduce (one step, no persistence in
    units); the excess time covers the window after the injection."""
    rep, _, truth = _run("nccl-hang")
    assert truth["fault_id"] == "nccl-hang"
    assert rep.anomalous
    assert rep.events and max(e.dur for e in rep.events) > 20e6
    split = float((REAL / "nccl-hang" / "inject_time.txt").read_text())
    assert rep.detected_at == pytest.approx(split, abs=0.1)


@pytest.mark.parametrize("name", ["clean", "clean-core", "cpu-contention", "nccl-hang"])
def test_real_fixtures_stay_small(name: str) -> None:
    assert sum(p.stat().st_size for p in (REAL / name).rglob("*") if p.is_file()) < 300_000


def test_real_sigstop_inside_the_transport_is_not_blamed_on_a_gap() -> None:
    """SIGSTOP of rank-1 while every rank sat in gloo:all_reduce: all four wait in the transport, so the traces
    cannot tell the stopped rank, and no rule may read its silenced exporter (a live hang has none)."""
    from chaosbench.case import CaseView
    from chaosbench.detectors.api import run_detector
    from chaosbench.detectors.outpost import detect

    result = run_detector("outpost", detect, CaseView(REAL / "nccl-hang"))
    assert result.status == "ok", result.error
    assert result.anomalous is True
    traces_only, _, _ = _run("nccl-hang")
    ranks = list(dict.fromkeys(r.component for r in traces_only.ranking))
    assert result.components()[: len(ranks)] == ranks  # then the nodes of these ranks (with_nodes)
    assert all(c.startswith("node-") for c in result.components()[len(ranks):])


def _hang_report(t0: float, waits: dict[str, str]):
    """Report of a 25 s hang: one event per rank (name per rank), as the localizer reports them."""
    from chaosbench.detectors.outpost import OutpostEvent, OutpostRank, OutpostReport

    events = tuple(OutpostEvent(r, r, r, "gloo" if n.startswith("gloo") else "main", n, n, 1, (t0 + 0.1) * 1e6,
                                24.5e6, 5e3, 10.0) for r, n in waits.items())
    ranking = tuple(OutpostRank(r, r, r, "main", 10.0 - i, 1, 1) for i, r in enumerate(waits))
    return OutpostReport(True, ranking, events, 100, len(events), len(events), t0 + 0.1, 4.0, 0.1)


class _Case:
    inject_time = 1000.0
    topology = type("T", (), {"ranks": ("rank-0", "rank-1", "rank-2", "rank-3")})()


def test_hung_rank_is_the_one_stalled_above_the_transport() -> None:
    """A live hang: rank-2 blocks in its all-reduce before handing its part over; its peers wait inside
    gloo:all_reduce. Every rank is stalled, only rank-2 holds no transport wait: it goes first."""
    from chaosbench.detectors.outpost import stopped_first

    waits = {"rank-0": "gloo:all_reduce", "rank-1": "gloo:all_reduce", "rank-3": "gloo:all_reduce"}
    rep = _hang_report(1000.0, {**waits, "rank-2": "allreduce"})
    out = stopped_first(rep, _Case())
    assert [r.component for r in out.ranking] == ["rank-2", "rank-0", "rank-1", "rank-3"]
    every = _hang_report(1000.0, {r: "gloo:all_reduce" for r in _Case.topology.ranks})
    assert stopped_first(every, _Case()) == every  # all in the transport: no rank can be told apart
    no_transport = _hang_report(1000.0, {r: "allreduce" for r in _Case.topology.ranks})
    assert stopped_first(no_transport, _Case()) == no_transport


def test_stopped_rank_without_events_is_put_first() -> None:
    """core nccl-hang-r0: the SIGSTOPped rank-1 stopped between two collectives, so only its peers'
    ~25 s waits in the transport are in the traces and rank-1 is not ranked at all: it never joined the
    collective, which the traces show without any telemetry."""
    from chaosbench.detectors.outpost import stopped_first

    rep = _hang_report(1000.0, {"rank-0": "gloo:all_reduce", "rank-2": "gloo:all_reduce",
                                "rank-3": "gloo:all_reduce"})
    out = stopped_first(rep, _Case())
    assert [r.component for r in out.ranking] == ["rank-1", "rank-0", "rank-2", "rank-3"]
    assert out.ranking[0].score >= out.ranking[1].score
