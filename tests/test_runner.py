"""The run pipeline: timeline pieces (fast) and end-to-end runs of the local testbed (slow, root)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from chaosbench import probes, runner, stages, timeline
from chaosbench.backends.local.cleanup import leftovers
from chaosbench.backends.local.plan import read_plan
from chaosbench.case import CaseView, find_cases, labels_dir_of, read_ground_truth
from chaosbench.errors import PreflightFailed
from chaosbench.faults import lifecycle
from chaosbench.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]
SHORT = f"""include: {REPO}/scenarios/_base.yaml
metadata:
  name: clean-short
spec:
  deployment:
    topology: {{nodes: 2, tensor_parallel: 2, data_parallel: 1}}
  workload: {{duration: 40s, warmup: 5s}}
  nominal_inject: 25s
  traces: {{enabled: true, ranks: all, baseline: 8s}}
  faults: []
"""


@pytest.fixture
def port_base(monkeypatch) -> int:
    """A free block of host ports (other testbeds may run on this machine); as in tests/backends/conftest.py."""
    import socket

    def free(port: int) -> bool:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    for base in range(21000 + (os.getpid() % 500) * 20, 32000, 10):  # below the ephemeral ports
        if all(free(base + i) for i in range(6)):
            monkeypatch.setenv("CHAOSBENCH_PORT_BASE", str(base))
            return base
    pytest.skip("no free port block")


@pytest.fixture
def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, cgroups)")


@pytest.fixture
def short_scenario(tmp_path) -> Path:
    path = tmp_path / "clean-short.yaml"
    path.write_text(SHORT)
    return path


# ----------------------------------------------------------------------------- fast


def test_trace_windows_default_to_the_nominal_injection(short_scenario):
    sc = load_scenario(short_scenario)
    assert timeline.trace_windows(sc) == [(17.0, 40.0)]  # nominal 25 s - 8 s baseline, + the 20 s nominal window (cut at the end of the load)
    faulty = load_scenario(REPO / "scenarios" / "cpu-throttle.yaml")
    start, dur = faulty.spec.faults[0].start, faulty.spec.faults[0].duration
    assert timeline.trace_windows(faulty) == [(start - faulty.spec.traces.baseline, start + dur)]


def test_with_seed_overrides_only_the_seed(short_scenario):
    sc = load_scenario(short_scenario)
    seeded = runner.with_seed(sc, 77)
    assert seeded.spec.workload.seed == 77 and seeded.spec.workload.duration == sc.spec.workload.duration
    assert runner.with_seed(sc, None) is sc


def test_probes_and_stop_conditions(monkeypatch, short_scenario):
    sc = load_scenario(short_scenario)
    values = {"q": [1.0]}
    monkeypatch.setattr(probes, "promql", lambda url, q: values["q"])
    assert probes.probes_hold("u", sc.spec.steady_state) is None
    values["q"] = [0.0]
    assert "engine-serves-requests" in probes.probes_hold("u", sc.spec.steady_state)
    values["q"] = []
    assert "no data" in probes.probes_hold("u", sc.spec.steady_state)
    cond = type("C", (), {"name": "c", "query": "q", "for_": 0.2})()
    watch = probes.StopWatch("u", [cond])
    values["q"] = [1.0]
    assert watch.check() is None  # starts holding
    time.sleep(0.25)
    assert "stop condition c held" in watch.check()
    values["q"] = [0.0]
    assert watch.check() is None and not watch.since


# ----------------------------------------------------------------------------- end to end


def _run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.rglob("testbed.json"))


def _assert_nothing_left(out: Path) -> None:
    dirs = _run_dirs(out)
    assert dirs, "the run recorded its testbed"
    for d in dirs:
        plan = read_plan(d)
        left = leftovers(plan)
        assert left.empty(), left.describe()
        assert not Path(plan.ray_tmp_root).exists()
        ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert plan.run_id not in ns


def _nested_pairs(trace: Path) -> int:
    with gzip.open(trace, "rt") as fh:
        doc = json.load(fh)
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    spans = sorted(((str(e["pid"]), str(e["tid"]), float(e["ts"]), float(e.get("dur", 0)), e["name"])
                    for e in events if e.get("ph") == "X"), key=lambda s: (s[0], s[1], s[2], -s[3]))
    nested, stack = 0, []
    for pid, tid, ts, dur, _ in spans:
        while stack and (stack[-1][0], stack[-1][1]) == (pid, tid) and stack[-1][2] + stack[-1][3] < ts + dur:
            stack.pop()
        if stack and (stack[-1][0], stack[-1][1]) == (pid, tid):
            nested += 1
        elif stack and (stack[-1][0], stack[-1][1]) != (pid, tid):
            stack = []
        stack.append((pid, tid, ts, dur))
    return nested


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from chaosbench.cli import main; main()", *args]


@pytest.mark.slow
@pytest.mark.root
def test_clean_run_end_to_end(tmp_path, short_scenario, port_base, need_root):
    out = tmp_path / "results"
    res = subprocess.run(_cli("run", str(short_scenario), "--out", str(out), "--no-eval"), cwd=REPO, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr[-3000:]
    cases = list(find_cases(out))
    assert len(cases) == 1
    case = cases[0]
    labels = labels_dir_of(case)
    manifest = json.loads((labels / "manifest.full.json").read_text())
    assert manifest["status"] == "completed", manifest.get("reason")
    assert manifest["versions"]["ray"] and manifest["chaosbench"]["git_sha"]
    for f in ("topology.json", "events.jsonl", "inject_time.txt", "data.csv", "logs.csv", "load/requests.jsonl",
              "load/summary.json", "load/locust_stats.csv"):
        assert (case / f).is_file(), f
    for f in ("scenario.resolved.yaml", "ground_truth.json", "events.jsonl"):
        assert (labels / f).is_file(), f
    assert not (case / "ground_truth.json").exists()
    view = CaseView(case)
    truth = read_ground_truth(case)
    assert truth["fault_id"] is None and truth["verified"] is False
    assert view.inject_time == pytest.approx(manifest["load_start"] + 25.0, abs=0.5)

    df = view.metrics()
    assert df["time"].diff().dropna().eq(1).all() and not df.isna().any().any()
    assert len(df) >= 38, "one row per second of load"
    comps = {c.split("_", 1)[0] for c in df.columns if c != "time"}
    assert {"ingress", "node-0", "node-1", "rank-0", "rank-1"} <= comps
    assert {"ingress_latency", "ingress_error_rate", "rank-0_DCGM_FI_DEV_SM_CLOCK",
            "node-1_chaosbench_node_cpu_usage_seconds:rate"} <= set(df.columns)
    assert df["node-0_chaosbench_node_cpu_usage_seconds:rate"].max() > 0
    assert df["ingress_latency"].max() > 0

    reqs = view.requests()
    ok = reqs[reqs["status"] == "ok"]
    assert len(ok) >= 10 and (ok["ttft"] > 0).all() and (ok["e2e"] >= ok["ttft"]).all()
    assert view.load_summary()["ttft_s"]["p50"] > 0

    traces = view.trace_files()
    assert [t.name for t in traces] == ["rank-0.json.gz", "rank-1.json.gz"]
    assert all(_nested_pairs(t) > 10 for t in traces)
    stages = {(e["stage"], e["event"]) for e in view.events()}
    assert {("deploy", "end"), ("load.start", "end"), ("baseline.gate", "end"), ("collect", "end")} <= stages
    assert not (case.parent.parent / "logs" / "run.log").read_text().count("Traceback"), "a quiet, clean run"
    assert isinstance(pd.read_csv(case / "logs.csv"), pd.DataFrame)
    _assert_nothing_left(out)


@pytest.mark.slow
def test_engine_failing_at_start_is_torn_down_in_loopback_mode(tmp_path, short_scenario, port_base):
    """Also covers the no-root layout: one Ray node on loopback holding every node's resource."""
    from chaosbench.backends.local.plan import Ports
    from chaosbench.backends.local.preflight import port_in_use
    from chaosbench.backends.local.testbed import deploy_local

    ports = Ports.from_env().on_loopback()
    busy = [p for p in ports.host_ports(isolated=False).values() if port_in_use(p)]
    busy += [p for p in ports.node_ports(isolated=False).values() if port_in_use(p, "0.0.0.0")]
    if busy:
        pytest.skip(f"loopback ports in use by something else on this machine: {busy}")

    def crashing_engine(*args, **kwargs):
        import ray

        assert ray.cluster_resources().get("node-1") == 1000, "every node's resource on the one Ray node"
        raise RuntimeError("rank-1 exited during start (exit code 1)")

    with pytest.raises(PreflightFailed, match="engine 'mini' failed to start: RuntimeError: rank-1 exited"):
        deploy_local(load_scenario(short_scenario), tmp_path / "run", engine_deploy=crashing_engine, isolated=False)
    _assert_nothing_left(tmp_path)


@pytest.mark.slow
@pytest.mark.root
def test_ctrl_c_during_the_load_tears_everything_down(tmp_path, short_scenario, port_base, need_root):
    out = tmp_path / "results"
    log = tmp_path / "run.log"
    with log.open("w") as fh:  # a file, not a pipe: a full pipe would block the run
        proc = subprocess.Popen(_cli("run", str(short_scenario), "--out", str(out), "--no-eval"), cwd=REPO, stdout=fh,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 400
    journal = None
    while time.time() < deadline and proc.poll() is None:
        journal = next(out.rglob("labels/*/events.jsonl"), None) if out.exists() else None
        if journal and '"stage": "load.start", "event": "end"' in journal.read_text():
            break
        time.sleep(0.5)
    if proc.poll() is not None:
        pytest.fail(f"the run ended (rc {proc.returncode}) before the load started: {log.read_text()[-2000:]}")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=180)
    err = log.read_text()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert not list(find_cases(out)), "an interrupted case is left as .partial"
    assert journal is not None and (journal.parents[2] / "cases" / f"{journal.parent.name}.partial").is_dir()
    _assert_nothing_left(out)


def _fault_spec(*windows: tuple[float, float]):
    from types import SimpleNamespace

    steps = [SimpleNamespace(start=s, duration=d, name=f"f{i}") for i, (s, d) in enumerate(windows)]
    return SimpleNamespace(faults=steps, stop_conditions=[], telemetry=SimpleNamespace(step=0.02))


def _fake_injections(monkeypatch, log: list, fail_on: str | None = None):
    from contextlib import contextmanager
    from types import SimpleNamespace

    import chaosbench.faults.lifecycle as lifecycle

    @contextmanager
    def injected(testbed, step, writer, index):
        log.append(("in", step.name, round(time.time(), 2)))
        try:
            if step.name == fail_on:
                raise KeyboardInterrupt
            yield SimpleNamespace(verified_at=None, abort=lambda why: None)
        finally:
            log.append(("out", step.name, round(time.time(), 2)))

    monkeypatch.setattr(lifecycle, "injected", injected)


def _timeline() -> timeline.Timeline:
    rec = stages.Recorder.__new__(stages.Recorder)
    rec.progress = None
    return timeline.Timeline(time.time(), [], rec, 10.0)


BED = SimpleNamespace(prometheus_url="", promql=lambda q: q)


def test_overlapping_faults_are_each_held_for_their_own_window(monkeypatch):
    log: list = []
    _fake_injections(monkeypatch, log)
    spec = _fault_spec((0.1, 0.5), (0.3, 0.5))  # f0 [0.1, 0.6], f1 [0.3, 0.8]
    tl = _timeline()
    assert lifecycle.hold_faults(spec, BED, None, tl) == ("completed", None)
    assert [(e, n) for e, n, _ in log] == [("in", "f0"), ("in", "f1"), ("out", "f0"), ("out", "f1")]
    t = {(e, n): at - tl.t0 for e, n, at in log}
    assert t[("out", "f0")] == pytest.approx(0.6, abs=0.1) and t[("out", "f1")] == pytest.approx(0.8, abs=0.1)


def test_an_interrupt_recovers_every_live_fault(monkeypatch):
    log: list = []
    _fake_injections(monkeypatch, log, fail_on="f1")
    with pytest.raises(KeyboardInterrupt):
        lifecycle.hold_faults(_fault_spec((0.05, 1.0), (0.2, 1.0)), BED, None, _timeline())
    assert sorted((e, n) for e, n, _ in log) == [("in", "f0"), ("in", "f1"), ("out", "f0"), ("out", "f1")]


def test_a_written_ground_truth_is_kept_and_a_missing_one_is_made(tmp_path, short_scenario):
    from chaosbench.case import CaseWriter

    sc = load_scenario(short_scenario)
    writer = CaseWriter(tmp_path / "run" / "cases" / "abc123")
    truth = {**runner.clean_ground_truth(), "fault_id": "cpu-contention", "verified": True, "start": 5.0}
    writer.write_ground_truth(truth)
    runner._ensure_ground_truth(writer, sc, 1.0)
    assert read_ground_truth(writer.path) == truth, "the verified ground truth (labels side) is not replaced"
    other = CaseWriter(tmp_path / "run" / "cases" / "def456")
    runner._ensure_ground_truth(other, sc, 1.0)
    assert read_ground_truth(other.path)["verified"] is False
    assert float((other.path / "inject_time.txt").read_text()) == pytest.approx(1.0 + sc.spec.nominal_inject)


def test_a_case_reaches_the_testbed_only_through_the_backend_contract(tmp_path, monkeypatch):
    """A whole case body (load, gate, trace window, recovery probes, collect) on the fake testbed: every hook the
    runner needs is in chaosbench.backends.base.Testbed, called in timeline order."""
    sys.path.insert(0, str(REPO / "tests" / "fixtures"))
    from fake_run import FakeTestbed

    from chaosbench.case import CaseWriter
    from chaosbench.rundir import CaseJob
    from chaosbench.testbeds import Bed

    path = tmp_path / "tiny.yaml"
    path.write_text(f"""include: {REPO}/scenarios/_base.yaml
metadata: {{name: tiny}}
spec:
  workload: {{duration: 3s, warmup: 0.5s}}
  nominal_inject: 1s
  traces: {{enabled: true, windows: [{{start: 0.5s, duration: 1s}}]}}
  faults: []
""")
    calls: list[str] = []
    testbed = FakeTestbed(tmp_path / "tb", lambda **rec: calls.append(rec.get("hook", rec["event"])))
    monkeypatch.setattr(probes, "promql", lambda url, q: [1.0])
    monkeypatch.setattr(runner, "PROBE_SETTLE_S", 0.5)
    writer = CaseWriter(tmp_path / "run" / "cases" / "abc123")
    rec = stages.Recorder(writer)
    job = CaseJob(index=0, case_id="abc123", scenario=load_scenario(path), group="")
    status, reason, extras = runner._run_case(job, writer, rec, Bed(testbed, ""))
    assert (status, reason) == ("completed", None) and extras["engine"] == "mini"
    hooks = [c for c in calls if c != "promql"]
    assert hooks == ["deploy", "new_case", "start_load", "start_profile", "stop_profile", "collect_case"]
    assert calls.count("promql") == 2 * len(job.scenario.spec.steady_state)  # baseline gate + recovery probes
    assert (writer.path / "data.csv").is_file() and (writer.path / "load" / "summary.json").is_file()
    assert {"load.start", "baseline.gate", "traces.start", "traces.stop", "recovery.probes", "collect"} <= set(rec.timings)


def test_a_backend_that_breaks_the_contract_is_named(tmp_path):
    from chaosbench.backends.base import check_testbed
    from chaosbench.errors import PluginInvalid

    with pytest.raises(PluginInvalid, match=r"backend 'odd' returned a SimpleNamespace that lacks .*collect_case"):
        check_testbed("odd", SimpleNamespace(api_url="http://x", teardown=lambda: None))
