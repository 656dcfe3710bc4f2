"""Context assembly: robust deviations (gauges, cumulative counters, rates), telemetry gaps
(missing or forward-filled), log selection, and the bounded prompt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chaosbench.case import CaseView
from chaosbench.detectors.analyzer.context import (
    Span,
    Windows,
    build_context,
    compare_span,
    metric_deviations,
    series_kind,
    split_column,
)
from chaosbench.detectors.analyzer.prompt import PROMPT_VERSION, Budget, bounded, build_prompt

from .conftest import RANKS, T0, _ev, fault_frame, write_case


def _span() -> Span:
    return compare_span(T0, Windows(), [])[0]


def _frame(**cols: np.ndarray) -> pd.DataFrame:
    t = np.arange(T0 - 120, T0 + 60, 1.0)
    return pd.DataFrame({"time": t, **{k: v(t) if callable(v) else v for k, v in cols.items()}})


def test_split_column_keeps_the_metric_whole():
    assert split_column("rank-2_DCGM_FI_DEV_SM_CLOCK") == ("rank-2", "DCGM_FI_DEV_SM_CLOCK")
    assert split_column("ingress_vllm:num_preemptions:rate") == ("ingress", "vllm:num_preemptions:rate")
    assert split_column("time") is None


def test_series_kinds():
    ramp = np.arange(20.0)
    assert series_kind("x:rate", ramp) == "rate"
    assert series_kind("node_cpu_seconds_total", np.zeros(20)) == "counter"
    assert series_kind("process_resident_memory_bytes", ramp) == "gauge"  # growing, but not a counter
    assert series_kind("http_request_size_bytes_count", ramp) == "counter"
    assert series_kind("DCGM_FI_DEV_XID_ERRORS", np.r_[np.zeros(10), np.full(10, 79.0)]) == "gauge"


def test_deviation_signs_and_counter_rates():
    rng = np.random.default_rng(1)
    df = _frame(**{
        "rank-1_clock": lambda t: np.where(t >= T0, 500.0, 1980.0) + rng.normal(0, 2, len(t)),
        "node-0_flat": lambda t: 1.0 + rng.normal(0, 0.01, len(t)),
        # cumulative counter whose rate goes 1/s -> 9/s after the injection
        "node-0_throttled_total": lambda t: np.cumsum(np.where(t >= T0, 9.0, 1.0)),
    })
    devs, gaps = metric_deviations(df, _span(), Windows())
    by = {(d.component, d.metric): d for d in devs}
    assert by[("rank-1", "clock")].z < -10
    thr = by[("node-0", "throttled_total")]
    assert thr.kind == "counter" and thr.before == pytest.approx(1.0) and thr.after == pytest.approx(9.0)
    assert ("node-0", "flat") not in by and gaps == []


def test_gaps_missing_and_forward_filled():
    rng = np.random.default_rng(2)
    cols = {}
    for m in ("a", "b", "c"):
        cols[f"rank-1_{m}"] = lambda t: np.where(t >= T0, np.nan, rng.normal(5, 1, len(t)))
        # forward-filled after the injection: stuck at its last value before
        cols[f"rank-2_{m}"] = lambda t: (pd.Series(np.where(t >= T0, np.nan, rng.normal(5, 1, len(t))))
                                         .ffill().to_numpy())
        cols[f"rank-3_{m}"] = lambda t: rng.normal(5, 1, len(t))
    cols["rank-0_a"] = lambda t: np.where(t >= T0, 0.0, rng.normal(5, 1, len(t)))  # idle at a new level
    cols["rank-0_b"] = lambda t: np.where(t >= T0, 0.0, rng.normal(5, 1, len(t)))
    cols["rank-0_c"] = lambda t: np.where(t >= T0, 0.0, rng.normal(5, 1, len(t)))
    _, gaps = metric_deviations(_frame(**cols), _span(), Windows())
    assert [g.component for g in gaps] == ["rank-1", "rank-2"]
    assert all(g.after_fill < 0.1 and g.share == 1.0 for g in gaps)


def test_context_reads_outpost_logs_and_topology(make_case):
    ctx = build_context(CaseView(make_case("gpu-xid-error")))
    assert ctx.outpost == "file" and len(ctx.events) == 3
    assert ctx.events[0].score >= ctx.events[-1].score
    assert any("NVRM: Xid" in ln.message for ln in ctx.logs)
    assert {"ingress", "node-0", "rank-3"} <= set(ctx.components) and "host" not in ctx.components
    assert ctx.deviations[0].z != 0 and abs(ctx.deviations[0].z) >= abs(ctx.deviations[-1].z)


def test_logs_outside_the_window_or_plain_info_are_skipped(tmp_path: Path):
    logs = [
        {"time": T0 - 500, "component": "rank-0", "level": "ERROR", "message": "old error"},
        {"time": T0 + 3, "component": "rank-0", "level": "INFO", "message": "served 10 requests"},
        {"time": T0 + 4, "component": "rank-0", "level": "INFO", "message": "watchdog: collective timed out"},
        {"time": T0 + 5, "component": "node-1", "level": "WARNING", "message": "slow"},
    ]
    df, _, _ = fault_frame(None)
    ctx = build_context(CaseView(write_case(tmp_path / "c", None, frame=df, logs=logs)))
    assert [ln.message for ln in ctx.logs] == ["watchdog: collective timed out", "slow"]


def test_bounded_marks_what_it_cuts():
    lines = [f"line {i} " + "x" * 50 for i in range(100)]
    text = bounded(lines, max_lines=10, max_chars=10_000, line_chars=30, what="events")
    assert text.count("\n") == 10 and text.endswith("[... 90 more events truncated]")
    assert "[...truncated]" in text.splitlines()[0] and len(text.splitlines()[0]) <= 30
    assert bounded([], 5, 100, 50, "log lines") == "(no log lines)"
    by_chars = bounded(["y" * 40] * 10, max_lines=100, max_chars=100, line_chars=200, what="events")
    assert by_chars.endswith("[... 8 more events truncated]")


def test_prompt_is_bounded_and_complete(tmp_path: Path):
    events = [_ev(RANKS[i % 4], f"aten::op{i}", 3.0, 1.0) for i in range(500)]
    logs = [{"time": T0 + 1, "component": "rank-0", "level": "ERROR", "message": "e" * 1000} for _ in range(300)]
    df, _, _ = fault_frame("cpu-contention")
    ctx = build_context(CaseView(write_case(tmp_path / "c", None, frame=df, events=events, logs=logs)))
    prompt = build_prompt(ctx)
    assert len(prompt) < 30_000
    assert "[... 470 more events truncated]" in prompt and "more log lines truncated]" in prompt
    for section in ("## Deployment", "## Fault catalog", "gpu-clock-lock (class GPU, target rank)",
                    "<analysis>", "rank-0 on node-0", "chaosbench_node_cpu_usage_seconds:rate"):
        assert section in prompt
    assert "$" not in prompt.replace("$events", "")  # every placeholder filled
    small = build_prompt(ctx, Budget(events=2, deviations=1, logs=1))
    assert "[... 498 more events truncated]" in small and len(small) < len(prompt)
    assert PROMPT_VERSION == "analyzer_v1"


def test_prompt_says_when_outpost_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import sys

    monkeypatch.setitem(sys.modules, "chaosbench.detectors.outpost", None)
    ctx = build_context(CaseView(write_case(tmp_path / "c", "cpu-throttle", outpost="none")))
    assert ctx.outpost == "unavailable" and ctx.events == ()
    prompt = build_prompt(ctx)
    assert "Outpost unavailable" in prompt and "reason from metrics and logs only" in prompt


def test_a_short_fault_is_not_averaged_away_and_one_spike_is_ignored():
    rng = np.random.default_rng(3)
    df = _frame(**{
        "rank-1_short": lambda t: np.where((t >= T0) & (t < T0 + 12), 500.0, 1980.0) + rng.normal(0, 5, len(t)),
        "rank-2_spike": lambda t: np.where(t == T0 + 5, 5000.0, 1980.0) + rng.normal(0, 5, len(t)),
    })
    devs, _ = metric_deviations(df, _span(), Windows())
    by = {d.component: d for d in devs}
    assert by["rank-1"].after == pytest.approx(500.0, abs=20) and by["rank-1"].z < -10
    assert "rank-2" not in by


def _rec(t: float, stage: str, event: str) -> dict:
    return {"t": t, "stage": stage, "event": event, "status": "ok"}


def test_span_follows_the_timeline():
    w = Windows()
    assert compare_span(T0, w, []) == (Span(T0 - 300, T0 - 2, T0, T0 + 30), "")
    timeline = [_rec(T0 - 20, "traces.start", "start"), _rec(T0 - 15, "traces.start", "end"),
                _rec(T0 + 25, "traces.stop", "start"), _rec(T0 + 40, "load.end", "start")]
    span, note = compare_span(T0, w, timeline)
    assert span == Span(T0 - 15, T0 - 2, T0, T0 + 25)
    assert "profiler" in note and "traces.stop" in note
    short = [_rec(T0 - 3, "traces.start", "end"), _rec(T0 + 1, "load.end", "start")]
    assert compare_span(T0, w, short)[0] == Span(T0 - 300, T0 - 2, T0, T0 + 5)  # minimum lengths kept


def test_trace_flush_after_the_fault_is_not_read_as_a_fault(tmp_path: Path):
    df, _, _ = fault_frame(None)
    flush = df["time"] >= T0 + 12  # ranks busy writing traces: memory and latency jump
    df.loc[flush, "node-1_chaosbench_node_memory_usage_bytes"] *= 3
    df.loc[flush, "ingress_latency"] *= 5
    timeline = [_rec(T0 - 15, "traces.start", "end"), _rec(T0 + 12, "traces.stop", "start")]
    trimmed = build_context(CaseView(write_case(tmp_path / "a", None, frame=df, events=[], timeline=timeline)))
    assert trimmed.deviations == () and "traces.stop" in trimmed.span_note
    untrimmed = build_context(CaseView(write_case(tmp_path / "b", None, frame=df, events=[])))
    assert {d.component for d in untrimmed.deviations} >= {"node-1", "ingress"}
    assert "metric windows: before [-15 s, -2 s), after [+0 s, +12 s]" in build_prompt(trimmed)


def test_long_paths_are_cut_before_the_durations(tmp_path: Path):
    from chaosbench.detectors.api import AnomalousEvent

    ev = AnomalousEvent("rank-1", "42", "main", "aten::mm", (T0 + 1) * 1e6, 4000.0, 1000.0, 9.0,
                        " > ".join(["layer"] * 200))
    df, _, _ = fault_frame(None)
    prompt = build_prompt(build_context(CaseView(write_case(tmp_path / "c", None, frame=df, events=[ev]))))
    line = next(ln for ln in prompt.splitlines() if ln.startswith("- rank-1 aten::mm"))
    assert "observed=4 ms expected=1 ms" in line and line.endswith("[...truncated]") and len(line) <= 240
