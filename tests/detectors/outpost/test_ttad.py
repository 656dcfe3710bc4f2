from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from chaosbench.detectors.outpost.importers import read_traces
from chaosbench.detectors.outpost.ttad import TTADConfig, _loo_median, anomalous, score
from chaosbench.detectors.outpost.ttc import build


def test_leave_one_out_median_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    group = rng.integers(0, 30, 400)
    x = rng.normal(3.0, 1.0, 400)
    got, size = _loo_median(group, x)
    for i in range(400):
        others = x[(group == group[i]) & (np.arange(400) != i)]
        want = np.median(others) if others.size else np.nan
        assert np.isclose(got[i], want, equal_nan=True)
        assert size[i] == (group == group[i]).sum()


def _ranks_trace(tmp_path: Path, workers: int, steps: int, slow_worker: int | None, factor: float) -> Path:
    """Each worker: steps x (step > op); small multiplicative noise; one worker's op slowed."""
    rng = np.random.default_rng(1)
    for w in range(workers):
        events, t = [], 0.0
        for s in range(steps):
            d = 100.0 * float(rng.lognormal(0, 0.03))
            if w == slow_worker and s >= steps // 2:
                d *= factor
            events += [{"ph": "X", "name": "step", "pid": w, "tid": w, "ts": t, "dur": d + 20, "args": {"step": s}},
                       {"ph": "X", "name": "op", "pid": w, "tid": w, "ts": t + 10, "dur": d}]
            t += 500.0
        (tmp_path / f"rank-{w}.json").write_text(json.dumps({"traceEvents": events}))
    return tmp_path


def test_one_outlier_among_four_exceeds_lambda_3(tmp_path: Path) -> None:
    """The sqrt(n-1) trap: with mean/sigma over the group incl. the outlier, z <= 1.73 for n=4."""
    f = build(read_traces(_ranks_trace(tmp_path, 4, 20, slow_worker=2, factor=1.5)))
    s = score(f, None, TTADConfig())
    t = f.table
    op = np.array([t.names[i] == "op" for i in t.name])
    late = f.step >= 10
    slow = op & late & (t.worker == 2)
    assert (s.z_cross[slow] > 3).all()
    assert (np.nan_to_num(s.z_cross[op & ~slow], nan=0) < 3).all()
    assert np.allclose(s.expected[slow], t.dur[slow] / 1.5, rtol=0.1)


def test_intra_worker_sees_a_slowdown_on_every_worker(tmp_path: Path) -> None:
    trace = _ranks_trace(tmp_path, 2, 20, slow_worker=None, factor=1.0)
    for p in trace.glob("*.json"):  # slow every worker in the second half
        doc = json.loads(p.read_text())
        for ev in doc["traceEvents"]:
            if ev["args" if "args" in ev else "name"] == "op" and ev["ts"] >= 5000:
                ev["dur"] *= 2
        p.write_text(json.dumps(doc))
    f = build(read_traces(trace))
    cfg = TTADConfig()
    split_us = 5000.0
    no_hist = anomalous(f, score(f, None, cfg), 4.0, cfg)
    with_hist = anomalous(f, score(f, split_us / 1e6 * 1e6, cfg), 4.0, cfg)
    t = f.table
    op_late = np.array([t.names[i] == "op" for i in t.name]) & (t.ts >= split_us)
    assert not no_hist[op_late].any()  # both workers equally slow: cross-worker cannot see it
    assert with_hist[op_late].all()
    assert not with_hist[~op_late & (t.ts < split_us)].any()
