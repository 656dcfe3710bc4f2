"""The rules backend names the right fault class and component for each of the eleven faults,
from signals only, and answers "no anomaly detected" / "unknown" in the same format."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from chaosbench.case import CaseView
from chaosbench.detectors.analyzer import detect, explain
from chaosbench.detectors.analyzer.output import parse
from chaosbench.faults.catalog import FAULT_IDS, FAULTS
from chaosbench.layout import Layout

from .conftest import FAULT_TARGET, RANKS, T0, _ev, write_case

# Faults whose metrics alone name class and component on the local testbed (without Outpost's traces,
# network-delay reads as interconnect-degradation: both only lower the node's traffic there).
# a live nccl-hang looks the same in every rank's metrics: only the traces tell where each rank waits
METRICS_ONLY_OK = tuple(f for f in FAULT_IDS if f not in ("network-delay", "nccl-hang"))


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("analyzer-cases")
    return {f: write_case(root / f, f) for f in FAULT_IDS} | {"clean": write_case(root / "clean", None)}


@pytest.fixture
def no_outpost_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "chaosbench.detectors.outpost", None)  # import fails as if not installed


def test_synthetic_cases_cover_the_catalog():
    assert set(FAULT_TARGET) == set(FAULT_IDS)


@pytest.mark.parametrize("fault", FAULT_IDS)
def test_names_class_and_component(cases: dict[str, Path], fault: str):
    case = CaseView(cases[fault])
    result = detect(case)
    assert result.status == "ok"
    analysis = parse(result.explanation, set(case.topology.components))
    assert (analysis.fault_class, analysis.root_cause) == (fault, FAULT_TARGET[fault])
    assert analysis.category == FAULTS[fault].fault_class
    assert result.ranking[0].component == FAULT_TARGET[fault]
    assert result.extra["fault_class"] == fault and result.extra["confidence"] == analysis.confidence
    assert [s["kind"] for s in result.extra["chain"]][0] == "symptom"
    assert result.anomalous is True
    assert "(observed:" in analysis.chain[-1].text  # the cause step cites evidence


def test_clean_run_says_no_anomaly(cases: dict[str, Path]):
    result = detect(CaseView(cases["clean"]))
    analysis = parse(result.explanation)
    assert analysis.fault_class == "none" and analysis.root_cause == "none"
    assert analysis.chain[0].text.startswith("no anomaly detected")
    assert result.anomalous is False and result.ranking == ()


def test_empty_anomaly_list_and_quiet_metrics_say_no_anomaly(tmp_path: Path):
    case = write_case(tmp_path / "c", None, events=[])
    analysis = parse(detect(CaseView(case)).explanation)
    assert analysis.fault_class == "none"
    assert "Outpost reported no anomalous events" in analysis.chain[0].text


def test_quiet_outpost_ignores_soft_signals_but_not_hard_ones(tmp_path: Path):
    from .conftest import fault_frame

    df, _, _ = fault_frame(None)
    df.loc[df["time"] >= T0, "ingress_latency"] *= 3  # load noise-like: a soft signal only
    soft = write_case(tmp_path / "soft", None, frame=df, events=[])
    assert parse(detect(CaseView(soft)).explanation).fault_class == "none"
    xid_df, logs, _ = fault_frame("gpu-xid-error")
    hard = write_case(tmp_path / "hard", "gpu-xid-error", frame=xid_df, logs=logs, events=[])
    assert parse(detect(CaseView(hard)).explanation).fault_class == "gpu-xid-error"


@pytest.mark.parametrize("fault", METRICS_ONLY_OK)
def test_metrics_only_when_outpost_is_missing(tmp_path: Path, no_outpost_module: None, fault: str):
    case = write_case(tmp_path / fault, fault, outpost="none")
    result = detect(CaseView(case))
    analysis = parse(result.explanation)
    assert (analysis.fault_class, analysis.root_cause) == (fault, FAULT_TARGET[fault])
    assert result.extra["outpost"] == "unavailable"
    assert "metrics and logs only" in analysis.chain[0].text


def test_unreadable_outpost_answer_falls_back_to_metrics(tmp_path: Path):
    case = write_case(tmp_path / "c", "cpu-throttle")
    (case / "detectors" / "outpost.json").write_text("{not json")
    result = detect(CaseView(case))
    assert result.extra["fault_class"] == "cpu-throttle"
    assert "Outpost answer unreadable" in result.extra["outpost_note"]


def test_failed_outpost_answer_is_not_taken_for_silence(tmp_path: Path):
    from chaosbench.detectors.api import Result

    case = write_case(tmp_path / "c", "cpu-throttle")
    (case / "detectors" / "outpost.json").write_text(json.dumps(Result.failure("outpost", "no traces").to_json()))
    result = detect(CaseView(case))
    assert result.extra["outpost"] == "unavailable" and "Outpost failed (no traces)" in result.extra["outpost_note"]
    assert result.extra["fault_class"] == "cpu-throttle"


def test_anomaly_without_a_signature_is_unknown(tmp_path: Path):
    from .conftest import fault_frame

    df, _, _ = fault_frame(None)
    df.loc[df["time"] >= T0, "rank-2_DCGM_FI_DEV_GPU_UTIL"] = 99.0  # a signal, but no signature needs it alone
    events = [_ev(r, "aten::softmax", 3.0, 1.0) for r in RANKS]  # everyone slower
    case = write_case(tmp_path / "c", None, frame=df, events=events)
    analysis = parse(detect(CaseView(case)).explanation)
    assert analysis.fault_class == "unknown" and analysis.category == "unknown"
    assert analysis.root_cause in RANKS and "matches no known fault signature" in analysis.chain[-1].text


def test_metric_drift_alone_is_no_anomaly_when_outpost_saw_nothing(tmp_path: Path):
    """As on real clean runs: emulated power draw drifts (z ~ -5) while the traces are normal."""
    from .conftest import fault_frame

    df, _, _ = fault_frame(None)
    for rank in RANKS:  # a hard signal (not dropped when Outpost is quiet) that no signature takes alone
        df.loc[df["time"] >= T0, f"{rank}_DCGM_FI_DEV_POWER_USAGE"] *= 0.85
    case = write_case(tmp_path / "c", None, frame=df, events=[])  # ... and Outpost says normal
    result = detect(CaseView(case))
    analysis = parse(result.explanation)
    assert analysis.fault_class == "none" and result.anomalous is False
    assert "metric deviations alone" in analysis.chain[0].text


def test_trace_events_nothing_backs_are_no_anomaly(tmp_path: Path):
    """As on real clean runs where Outpost flagged scheduling jitter: no metric or log backs the events."""
    from .conftest import fault_frame

    df, _, _ = fault_frame(None)
    df.loc[df["time"] >= T0, "ingress_latency"] *= 3  # a symptom alone
    events = [_ev(r, "aten::empty", 6.0, 0.001) for r in RANKS]
    analysis = parse(detect(CaseView(write_case(tmp_path / "c", None, frame=df, events=events))).explanation)
    assert analysis.fault_class == "none" and "Outpost flagged 4 trace events" in analysis.chain[0].text


def test_ground_truth_is_never_read(cases: dict[str, Path], tmp_path: Path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(cases["gpu-clock-lock"], copy)
    (copy / "ground_truth.json").write_text(json.dumps({"fault_id": "cpu-throttle", "component": "node-0"}))
    (copy / "scenario.resolved.yaml").write_text("spec: {faults: [{id: cpu-throttle}]}\n")
    assert detect(CaseView(copy)).explanation == detect(CaseView(cases["gpu-clock-lock"])).explanation


def test_unknown_backend_is_one_clear_error(cases: dict[str, Path]):
    from chaosbench.errors import InputInvalid

    with pytest.raises(InputInvalid, match="did you mean 'rules'"):
        explain(CaseView(cases["clean"]), "rule")


def test_with_the_real_outpost_on_generated_traces(tmp_path: Path):
    """Outpost (chaosbench.detectors.outpost) scores generated per-rank traces; the case has no data.csv."""
    synth = pytest.importorskip("chaosbench.detectors.outpost.synth")
    synth.write_case(synth.SynthSpec(slowdowns=(synth.Slowdown((2,), 3.0, 20, 39),), seed=0), tmp_path / "slow")
    synth.write_case(synth.SynthSpec(seed=1), tmp_path / "clean")
    slow = detect(CaseView(tmp_path / "slow"))
    assert slow.extra["outpost"] == "detector" and "no metrics" in slow.extra["outpost_note"]
    assert (slow.extra["fault_class"], slow.ranking[0].component) == ("gpu-compute-contention", "rank-2")
    clean = parse(detect(CaseView(tmp_path / "clean")).explanation)
    assert clean.fault_class == "none" and "no anomaly detected" in clean.chain[0].text


def test_rules_output_is_checked_by_the_parser(cases: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    import chaosbench.detectors.analyzer.output as output

    monkeypatch.setattr(output, "render", lambda analysis: "<analysis>\nformat: v0\n</analysis>")
    result = explain(CaseView(cases["cpu-throttle"]))
    assert result.status == "failed" and result.extra["valid_format"] is False
    assert result.error.startswith("rules backend: invalid analysis block")


@pytest.mark.parametrize("fault", ["interconnect-degradation", "cpu-throttle", "nccl-hang"])
def test_noisy_telemetry_still_localizes(tmp_path: Path, fault: str):
    """Telemetry with +-40 % per-sample noise: a weak change of the node's traffic still breaks the tie."""
    result = detect(CaseView(write_case(tmp_path / fault, fault, noise=4.0, seed=2)))
    assert (result.extra["fault_class"], result.ranking[0].component) == (fault, FAULT_TARGET[fault])
    if fault == "interconnect-degradation":  # the weak traffic drop decided the node but is not cited
        step = next(s for s in result.extra["chain"] if "traffic carried" in s["text"])
        assert step["text"].endswith("(expected, not observed)")


def test_node_memory_growth_of_its_own_workers_is_not_host_memory_pressure(tmp_path: Path):
    """The profiler's buffers grow the ranks' RSS during the trace window; the node's usage follows."""
    from .conftest import fault_frame

    events = [_ev(r, "aten::empty", 3.0, 0.3) for r in ("rank-0", "rank-1")]
    for name, workers_grow in (("theirs", True), ("own", False)):
        df, _, _ = fault_frame(None)
        after = df["time"] >= T0
        df.loc[after, "node-0_chaosbench_node_memory_usage_bytes"] += 8e9
        if workers_grow:
            df.loc[after, "rank-0_process_resident_memory_bytes"] += 8e9
        result = detect(CaseView(write_case(tmp_path / name, None, frame=df, events=events)))
        assert (result.extra["fault_class"] == "host-memory-pressure") is not workers_grow, name


def test_cpu_contention_on_saturated_cores(tmp_path: Path):
    """As seen on a real vLLM case: the cores were already busy, so the node's CPU usage cannot rise; the
    stressor shows as new processes in the node and a few page-ins at its start (no machine-wide columns:
    the testbed machine is no component)."""
    from .conftest import RANK_NODE, fault_frame

    df, _, _ = fault_frame(None)
    after = (df["time"] >= T0) & (df["time"] < T0 + 25)
    for node in ("node-0", "node-1"):
        df[f"{node}_chaosbench_node_processes"] = 13.0
    df.loc[after, "node-0_chaosbench_node_processes"] = 16.0
    df.loc[after, "node-0_chaosbench_node_memory_major_faults:rate"] = 1.4  # binary page-in, not reclaim
    events = [_ev(r, "aten::fill_", 600.0, 0.006) for r in RANKS if RANK_NODE[r] == "node-0"]
    for name, evs in (("flagged", events), ("outpost-silent", [])):
        result = detect(CaseView(write_case(tmp_path / name, None, frame=df, events=evs)))
        assert (result.extra["fault_class"], result.ranking[0].component) == ("cpu-contention", "node-0"), name
        assert "chaosbench_node_processes 13 -> 16" in result.extra["chain"][-1]["text"]


def test_a_telemetry_gap_alone_is_not_a_hang(tmp_path: Path):
    """A rank whose exporter went silent (the collector forward-fills its gauges, zeroes its rates) while
    Outpost saw nothing: a live hang keeps its telemetry up, so no nccl-hang is read from the gap."""
    from .conftest import _freeze, fault_frame

    df, _, _ = fault_frame(None)
    _freeze(df, "rank-1", T0, T0 + 25)
    result = detect(CaseView(write_case(tmp_path / "c", None, frame=df, events=[])))
    assert result.extra["fault_class"] != "nccl-hang"


def test_live_hang_without_the_transport_ops_is_not_localized_to_a_rank(tmp_path: Path):
    """Every rank stalled in the collective call and none in a transport op (traces without the backend's
    ops): the traces cannot tell the hung rank, and the telemetry of a live hang is the same on every rank."""
    from .conftest import _ev, fault_frame

    df, _, _ = fault_frame(None)
    events = [_ev(r, "allreduce", 25_000.0, 2.0) for r in RANKS]
    result = detect(CaseView(write_case(tmp_path / "c", None, frame=df, events=events)))
    assert result.extra["fault_class"] != "nccl-hang" or result.ranking[0].component != "rank-1"


def test_every_rank_stuck_is_not_a_hang(tmp_path: Path):
    from .conftest import _freeze, fault_frame

    df, _, _ = fault_frame(None)
    for r in RANKS:  # a scrape outage: the collector forward-fills everyone
        _freeze(df, r, T0, T0 + 25)
    ctx_result = detect(CaseView(write_case(tmp_path / "c", None, frame=df, events=[])))
    assert ctx_result.extra["fault_class"] != "nccl-hang"


def test_several_stalled_ranks_are_waiting_not_hung(tmp_path: Path):
    """As in a real GEMM-hog case: two peers sat 1-2 s in a layer range (their all-reduce inside it) while
    the hog's rank ran slow ops; nobody's telemetry stopped. That is waiting, not a hang."""
    from .conftest import fault_frame

    df, _, _ = fault_frame(None)
    events = [_ev("rank-1", "layer.0", 1810.0, 29.7), _ev("rank-2", "layer.0", 1350.0, 31.2),
              _ev("rank-3", "aten::slice", 19.5, 0.001), _ev("rank-0", "aten::slice", 0.06, 0.001)]
    result = detect(CaseView(write_case(tmp_path / "c", None, frame=df, events=events)))
    assert result.extra["fault_class"] != "nccl-hang"


def _group(layout: Layout, scores: dict[str, float]):
    from chaosbench.detectors.analyzer.rules import Hypothesis, _group_of

    record = layout.record()
    comps = (*record["ranks"], *layout.replica_names(), *layout.stage_names())
    ctx = SimpleNamespace(topology=SimpleNamespace(layout=record), components=comps)
    hyps = [Hypothesis("gpu-power-cap", r, s, 1.0, ()) for r, s in sorted(scores.items(), key=lambda kv: -kv[1])]
    return _group_of(hyps[0], hyps, ctx)


def test_a_fault_on_every_rank_of_a_stage_or_replica_is_named_for_that_group():
    dp2_pp2 = Layout(dp=2, pp=2, tp=2, nodes=2)
    stage = ("replica-0.stage-1", ["rank-2", "rank-3"])
    assert _group(dp2_pp2, {"rank-2": 1.0, "rank-3": 0.8, "rank-6": 0.3}) == stage
    assert _group(dp2_pp2, {"rank-4": 1.0, "rank-5": 0.9, "rank-6": 0.9, "rank-7": 0.7}) == (
        "replica-1", ["rank-4", "rank-5", "rank-6", "rank-7"])
    assert _group(dp2_pp2, {"rank-2": 1.0, "rank-3": 0.4}) is None  # one rank stands out: the rank
    assert _group(dp2_pp2, {"rank-2": 1.0, "rank-3": 0.9, "rank-4": 0.9}) is None  # spills over the group
    assert _group(Layout(dp=1, pp=1, tp=4, nodes=2), {"rank-0": 1.0, "rank-1": 1.0, "rank-2": 1.0, "rank-3": 1.0}) is None


def test_an_analysis_on_a_stage_renders_and_parses():
    from chaosbench.detectors.analyzer.output import Analysis, ChainStep, render
    from chaosbench.detectors.analyzer.rules import _on_group

    chain = (ChainStep("symptom", ("ingress",), "requests slow down"), ChainStep("cause", ("rank-2",), "power cap"))
    analysis = Analysis(chain, "rank-2", "gpu-power-cap", "GPU", 0.8)
    grouped = _on_group(analysis, "replica-0.stage-1", ["rank-2", "rank-3"])
    parsed = parse(render(grouped), {"ingress", "rank-2", "rank-3", "replica-0.stage-1"})
    assert parsed.root_cause == "replica-0.stage-1" and parsed.chain[-1].components == ("replica-0.stage-1", "rank-2")
