"""RCAEval adapters: real RCAEval calls on synthetic cases, fallback detection, input builders."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from chaosbench.baselines import rcaeval
from chaosbench.baselines.inputs import metrics_frame, multi_source, span_table
from chaosbench.case import CaseView
from chaosbench.detectors.api import run_detector
from chaosbench.errors import CaseInvalid
from chaosbench.eval.synthetic import make_case

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # eval_fixtures


@pytest.fixture(scope="module")
def cpu_case(tmp_path_factory) -> CaseView:
    return CaseView(make_case(tmp_path_factory.mktemp("ds"), "cpu", "cpu-contention", "node-1", seed=3))


@pytest.mark.parametrize("name", ["baro", "nsigma", "mmbaro"])
def test_metric_methods_find_the_root(cpu_case, name):
    result = run_detector(name, rcaeval.make_detector(name), cpu_case)
    assert result.status == "ok", result.error
    assert result.components()[0] == "node-1"
    assert result.ranking[0].metric == "node-1_cpu"


def test_span_methods_run_on_request_spans(cpu_case):
    result = run_detector("tracerca", rcaeval.make_detector("tracerca"), cpu_case)
    assert result.status == "ok", result.error
    assert result.components() == ["ingress"]  # requests only show the ingress: the honest ceiling


def test_silent_fallback_is_a_failure(cpu_case):
    spec = rcaeval.RCAEvalMethod("fake", "eval_fixtures:fake_rcaeval_fallback", frozenset({"metrics"}))
    with pytest.raises(rcaeval.RCAEvalFailed, match="RCAEval fallback: fake_rcaeval_fallback failed"):
        rcaeval.call(spec, cpu_case)
    spec = rcaeval.RCAEvalMethod("fake", "eval_fixtures:fake_rcaeval_input_order", frozenset({"metrics"}))
    with pytest.raises(rcaeval.RCAEvalFailed, match="input column order"):
        rcaeval.call(spec, cpu_case)


def test_unavailable_methods_say_why():
    ok, why = rcaeval.status("rcd")
    assert not ok and "causal-learn" in why
    ok, why = rcaeval.status("pdiagnose")
    assert not ok and why
    assert rcaeval.status("baro") == (True, "ok")


def test_inputs(cpu_case):
    df = metrics_frame(cpu_case)
    assert df.columns[0] == "time" and not df.isna().any().any()
    assert all(df[c].nunique() > 1 for c in df.columns if c != "ingress_latency")  # constant columns dropped
    ms = multi_source(cpu_case)
    assert set(ms) == {"metric", "logts", "tracets_err", "tracets_lat"}
    assert {"node-0_logs", "rank-1_errors"} <= set(ms["logts"].columns)
    spans = span_table(cpu_case)
    assert {"traceID", "spanID", "parentSpanID", "serviceName", "methodName", "startTime", "duration"} <= set(spans)
    assert len(spans) == 3 * len(cpu_case.requests())
    assert spans["startTime"].min() > 1e15  # microseconds


def test_constant_columns_are_dropped(tmp_path):
    path = make_case(tmp_path, "flat", "cpu-contention", "node-0", seconds=60, inject_at=30)
    raw = pd.read_csv(path / "data.csv")
    raw["node-1_flat"] = 7.0
    raw.to_csv(path / "data.csv", index=False)
    df = metrics_frame(CaseView(path))
    assert "node-1_flat" not in df.columns and len(df.columns) == len(raw.columns) - 1


def test_inject_time_outside_the_data(tmp_path):
    path = make_case(tmp_path, "late", "cpu-contention", "node-0", seconds=60, inject_at=30)
    (path / "inject_time.txt").write_text("1\n")
    with pytest.raises(CaseInvalid, match="outside the data"):
        metrics_frame(CaseView(path))


def test_rcaeval_layout_brings_its_own_spans_and_logts(cpu_case, tmp_path):
    import shutil

    from chaosbench.eval.discover import RCAEvalCaseView

    run = tmp_path / "cartservice_delay" / "1"
    run.mkdir(parents=True)
    shutil.copy(cpu_case.path / "data.csv", run / "data.csv")
    shutil.copy(cpu_case.path / "inject_time.txt", run / "inject_time.txt")
    spans = span_table(cpu_case)
    spans.to_csv(run / "traces.csv", index=False)
    (run / "logts.csv").write_text("time,cartservice\n1,3\n2,4\n")
    view = RCAEvalCaseView(run)
    assert len(span_table(view)) == len(spans)
    assert list(multi_source(view)["logts"].columns) == ["time", "cartservice"]


def test_unsorted_score_pairs_are_sorted():
    # ges_pagerank returns (name, score) pairs in input order
    assert rcaeval._names([("a_x", 0.1), ("b_y", 0.9), ("c_z", 0.5)]) == ["b_y", "c_z", "a_x"]
    assert rcaeval._names(["b_y", "a_x"]) == ["b_y", "a_x"]


def test_graph_methods_get_fewer_series_than_samples(tmp_path):
    import numpy as np

    from chaosbench.baselines.inputs import decorrelated

    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 30))
    df = pd.DataFrame(np.hstack([base, base * 2.0 + 0.001 * rng.normal(size=(40, 30))]),
                      columns=[f"c{i}" for i in range(60)])
    df.insert(0, "time", np.arange(40.0))
    out = decorrelated(df)
    assert list(out.columns) == ["time", *(f"c{i}" for i in range(30))]  # the copies go, the first of each stays
    assert np.linalg.matrix_rank(np.corrcoef(out.drop(columns="time").to_numpy(), rowvar=False)) == 30


def test_granger_input_keeps_only_series_that_move(tmp_path):
    import numpy as np

    from chaosbench.baselines.inputs import GRANGER_MIN_CHANGES, granger_ready

    rng = np.random.default_rng(1)
    step = np.r_[np.full(50, 40.0), np.full(50, 41.0)]  # a thread count: one change
    sparse = np.zeros(100)
    sparse[[10, 60, 90]] = 1.0  # a rare spike counter: six changes
    df = pd.DataFrame({"time": np.arange(100.0), "a_noise": rng.normal(size=100), "b_step": step,
                       "c_sparse": sparse, "d_noise": rng.normal(size=100)})
    assert list(granger_ready(df).columns) == ["time", "a_noise", "d_noise"]
    assert list(granger_ready(df, min_changes=6).columns) == ["time", "a_noise", "c_sparse", "d_noise"]
    assert GRANGER_MIN_CHANGES > 7  # more than the 2 * 3 lags + constant regressors of RCAEval's test


def test_granger_gets_input_it_can_test(tmp_path):
    """The root cause of 'InfeasibleTestError' on every real case, and the fix: step counters in data.csv make one
    pairwise test a perfect fit, which ends RCAEval's granger(); without them it ranks."""
    import numpy as np

    path = make_case(tmp_path, "steps", "cpu-contention", "node-1", seed=5, seconds=100, inject_at=70)
    raw = pd.read_csv(path / "data.csv")
    for i, (comp, at) in enumerate([("rank-1", 30), ("rank-3", 31), ("node-0", 80)]):  # 1 s apart
        raw.insert(1 + i, f"{comp}_threads", np.where(np.arange(len(raw)) >= at, 41.0, 40.0))
    raw = raw[[c for c in raw.columns if not c.startswith(("rank-0", "rank-2", "node-0_mem", "node-1_net"))]]
    raw.to_csv(path / "data.csv", index=False)  # 20 series: the test stays quick (Granger tests every pair)
    case = CaseView(path)
    as_before = rcaeval.RCAEvalMethod("granger_pagerank", "RCAEval.e2e.granger_pagerank:granger_pagerank",
                                      frozenset({"metrics"}))
    with pytest.raises(rcaeval.RCAEvalFailed, match="InfeasibleTestError"):
        rcaeval.call(as_before, case)
    for name in ("granger_pagerank", "granger_randomwalk"):
        result = run_detector(name, rcaeval.make_detector(name), case)
        assert result.status == "ok", result.error
        assert not any(r.metric.endswith("_threads") for r in result.ranking)
        assert len(result.ranking) > 5


def test_fci_randomwalk_is_unavailable_with_the_reason():
    ok, why = rcaeval.status("fci_randomwalk")
    assert not ok and "Unexpected value" in why
    assert rcaeval.status("fci_pagerank") == (True, "ok")


def test_text_cells_become_gaps(tmp_path):
    path = make_case(tmp_path, "text", "cpu-contention", "node-0", seconds=60, inject_at=30)
    raw = pd.read_csv(path / "data.csv")
    raw["node-1_cpu"] = raw["node-1_cpu"].astype(object)
    raw.loc[5, "node-1_cpu"] = "NaN-ish"
    raw.to_csv(path / "data.csv", index=False)
    df = metrics_frame(CaseView(path))
    assert df["node-1_cpu"].dtype.kind == "f" and df.loc[5, "node-1_cpu"] == df.loc[4, "node-1_cpu"]  # filled
    assert df["node-0_cpu"].tolist() == raw["node-0_cpu"].tolist()
