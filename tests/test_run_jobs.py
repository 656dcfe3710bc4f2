"""The run loop: one testbed per group of cases, the recovery gate, the blind layout, interrupt and resume.

The testbed and the case body are faked (tests/fixtures/fake_run.py); the runner's loop, signal handling, run
directory and labels are the real ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaosbench.case import CaseView, is_case_dir
from chaosbench.errors import InputInvalid
from chaosbench.rundir import CaseJob, RunDir, execution_order

REPO = Path(__file__).resolve().parents[1]
FAKE = REPO / "tests" / "fixtures" / "fake_run.py"
SCENARIO = f"""include: {REPO}/scenarios/_base.yaml
metadata: {{name: clean-short}}
spec:
  workload: {{duration: 40s, warmup: 5s}}
  nominal_inject: 25s
  faults: []
"""


@pytest.fixture
def suite(tmp_path) -> Path:
    (tmp_path / "clean-short.yaml").write_text(SCENARIO)
    path = tmp_path / "suite.yaml"
    path.write_text("apiVersion: chaosbench/v1alpha1\nkind: Suite\nmetadata: {name: tiny}\n"
                    "spec: {scenarios: [clean-short.yaml], repetitions: 4, seeds: [5, 6, 7, 8]}\n")
    return path


def _fake(suite: Path, run_dir: Path, *args: str) -> list[str]:
    return [sys.executable, str(FAKE), str(suite), str(run_dir), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _events(run_dir: Path) -> list[dict]:
    f = run_dir / "fake-beds.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.is_file() else []


def test_one_testbed_serves_every_case_and_the_cases_are_blind(tmp_path, suite):
    run_dir = tmp_path / "run"
    res = subprocess.run(_fake(suite, run_dir), capture_output=True, text=True, env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    ev = [e["event"] for e in _events(run_dir)]
    assert ev.count("deploy") == 1 and ev.count("teardown") == 1 and ev.count("case") == 4
    run = RunDir(run_dir)
    labels = run.read_labels()
    assert sorted(r["index"] for r in labels) == [0, 1, 2, 3]
    plan = json.loads((run_dir / "plan.json").read_text())
    assert {p["case_id"] for p in plan} == {r["case_id"] for r in labels}
    for rec in labels:
        case = run.case_dir(rec["case_id"])
        assert is_case_dir(case) and len(case.name) == 12 and "clean" not in case.name
        assert rec["status"] == "completed" and rec["ground_truth"]["fault_id"] is None
        assert not (case / "ground_truth.json").exists() and not (case / "scenario.resolved.yaml").exists()
        assert (run.labels / case.name / "ground_truth.json").is_file()
        assert (run.labels / case.name / "scenario.resolved.yaml").is_file()
        blind = json.loads((case / "manifest.json").read_text())
        assert "scenario" not in blind and "status" not in blind and "run_id" not in blind
        assert "clean-short" not in (case / "manifest.json").read_text()
        full = json.loads((run.labels / case.name / "manifest.full.json").read_text())
        assert full["scenario"] == "clean-short" and full["status"] == "completed"
        stages = {e["stage"] for e in CaseView(case).events()}
        assert "load.start" in stages and not any(s.startswith("fault") or s.startswith("testbed") for s in stages)


def test_a_failed_recovery_gate_redeploys(tmp_path, suite):
    run_dir = tmp_path / "run"
    res = subprocess.run(_fake(suite, run_dir, "--residue-after", "0", "1", "2", "3"), capture_output=True,
                         text=True, env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    ev = _events(run_dir)
    assert [e["event"] for e in ev].count("deploy") == 4, "residue after every case: a new testbed each time"
    assert any("recovery gate failed (fault residue: a stressor)" in e.get("msg", "") for e in ev)
    journals = [(run_dir / "labels" / r["case_id"] / "events.jsonl").read_text() for r in RunDir(run_dir).read_labels()]
    assert sum('"testbed.redeploy"' in j for j in journals) == 3


def test_an_interrupted_run_resumes_to_the_same_cases(tmp_path, suite):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_fake(suite, run_dir, "--case-seconds", "1.5"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + 60
    while time.time() < deadline and len(RunDir(run_dir).read_labels()) < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    first = {r["case_id"] for r in RunDir(run_dir).read_labels()}
    assert 2 <= len(first) < 4
    assert [e["event"] for e in _events(run_dir)].count("teardown") == 1, "the testbed was torn down"
    plan_before = (run_dir / "plan.json").read_text()
    ran_before = sum(e["event"] == "case" for e in _events(run_dir))

    res = subprocess.run(_fake(suite, run_dir, "--resume"), capture_output=True, text=True, env=_env(), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (run_dir / "plan.json").read_text() == plan_before
    labels = RunDir(run_dir).read_labels()
    plan_ids = {p["case_id"] for p in json.loads(plan_before)}
    assert {r["case_id"] for r in labels} == plan_ids and len(labels) == 4, "every planned case once"
    assert sorted(r["index"] for r in labels) == [0, 1, 2, 3]
    assert {p.name for p in (run_dir / "cases").iterdir()} == plan_ids, "no partial case left"
    resumed = [e["case_id"] for e in _events(run_dir) if e["event"] == "case"][ran_before:]
    assert not first & set(resumed) and len(resumed) == 4 - len(first), "finished cases kept, the others run once"


def test_resume_refuses_another_file(tmp_path, suite):
    run_dir = tmp_path / "run"
    assert subprocess.run(_fake(suite, run_dir), capture_output=True, env=_env(), timeout=120).returncode == 0
    suite.write_text(suite.read_text().replace("repetitions: 4", "repetitions: 3").replace(", 8]", "]"))
    with pytest.raises(InputInvalid, match="not the file this run was started from"):
        RunDir(run_dir).check_source(suite)


def test_execution_order_keeps_groups_together():
    jobs = [CaseJob(i, f"id{i}", None, "a" if i % 2 else "b") for i in range(20)]
    order = execution_order(jobs)
    groups = [j.group for j in order]
    assert sorted(j.index for j in order) == list(range(20))
    assert groups == sorted(groups, key=lambda g: groups.index(g)), "each group runs in one stretch"
