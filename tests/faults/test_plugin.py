"""A fault added as a plugin (issue 16): one module under tests/ (plugin_fault.py, fault ``rank-nice``),
registered through a real entry point (a dist-info directory on PYTHONPATH of a subprocess), with no other file
edited. It is listed by ``chaosbench faults``, validates in a scenario, preflights, renders for
``--backend k8s --dry-run``, makes and undoes its effect, and (slow) runs on the local testbed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "chaosbench"
FAULT = "rank-nice"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The process environment of an installed plugin: its distribution's metadata on the path."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "chaosbench_rank_nice-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: chaosbench-rank-nice\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[chaosbench.faults]\n{FAULT} = tests.faults.plugin_fault\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / f"{FAULT}.yaml"
    path.write_text(f"""\
include: {REPO / "scenarios" / "_base.yaml"}
metadata: {{name: {FAULT}}}
spec:
  workload: {{duration: 45s, warmup: 5s}}
  steady_state: []
  traces: {{baseline: 10s}}
  faults:
  - id: {FAULT}
    target: {{rank: 1}}
    params: {{nice: 19}}
    start: 20s
    duration: 10s
    verify: {{timeout: 15s}}
""")
    return path


def run(env: dict[str, str], *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


def test_listed_by_chaosbench_faults(env: dict[str, str]) -> None:
    out = run(env, str(CLI), "faults", "--json")
    assert out.returncode == 0, out.stderr
    records = {r["id"]: r for r in json.loads(out.stdout)}
    assert records[FAULT]["params"]["nice"] == {"type": "int", "default": 19, "min": 1, "max": 19,
                                                "description": "CPU nice value of the rank's threads"}
    assert "gpu-power-cap" in records  # the shipped faults are still there
    assert FAULT not in run(dict(os.environ), str(CLI), "faults", "--json").stdout  # the entry point adds it


def test_validates_in_a_scenario(env: dict[str, str], scenario: Path, tmp_path: Path) -> None:
    out = run(env, str(CLI), "validate", str(scenario))
    assert out.returncode == 0, out.stdout + out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(scenario.read_text().replace("nice: 19", "nice: 40"))
    out = run(env, str(CLI), "validate", str(bad))
    assert out.returncode == 2 and "spec.faults[0].params.nice" in out.stdout + out.stderr
    out = run(dict(os.environ), str(CLI), "validate", str(scenario))  # not installed: an unknown fault id
    assert out.returncode == 2 and f"unknown fault id '{FAULT}'" in out.stdout + out.stderr


PREFLIGHT = """
import json, os, sys
from types import SimpleNamespace
from chaosbench.backends.base import RankInfo
from chaosbench.backends.local.preflight import check_faults
from chaosbench.errors import PreflightFailed
from chaosbench.faults.base import injector
from chaosbench.scenario import load_scenario

step = load_scenario(sys.argv[1]).spec.faults[0]
check_faults([step.id], isolated=True)
try:
    check_faults([step.id], isolated=False)
    blocked = ""
except PreflightFailed as exc:
    blocked = str(exc)
bed = SimpleNamespace(ranks={"rank-1": RankInfo("rank-1", 1, "node-0")}, rank_pid=lambda name: os.getpid())
fault = injector(step.id)
fault.preflight(bed, step)
handle = fault.prepare(bed, step, "k1")
fault.inject(handle, bed)
evidence = fault.verify(handle, bed)
fault.recover(handle)
print(json.dumps({"blocked": blocked, "evidence": evidence and evidence.detail, "after": os.getpriority(os.PRIO_PROCESS, 0)}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="recovery lowers a nice value: needs root")
def test_preflights_and_makes_and_undoes_its_effect(env: dict[str, str], scenario: Path) -> None:
    out = run(env, sys.executable, "-c", PREFLIGHT, str(scenario))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["blocked"].startswith(f"{FAULT} cannot run") and "rank-nice (restoring the rank's CPU" in got["blocked"]
    assert got["evidence"].startswith("rank-1:") and "at nice 19" in got["evidence"]
    assert got["after"] == 0


def test_renders_for_k8s_dry_run(env: dict[str, str], scenario: Path, tmp_path: Path) -> None:
    out = run(env, str(CLI), "run", str(scenario), "--backend", "k8s", "--dry-run", "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    (plan_file,) = tmp_path.glob(f"*/{FAULT}/k8s/faults/plan.json")
    plan = json.loads(plan_file.read_text())
    (action,) = plan if isinstance(plan, list) else plan["actions"]
    assert action["fault_id"] == FAULT and action["component"] == "rank-1" and action["mechanisms"] == ["chaos-mesh"]
    assert action["chaos_objects"] == [f"StressChaos/cb-{FAULT}-f0"]


@pytest.mark.slow
@pytest.mark.root
def test_runs_on_the_local_testbed(env: dict[str, str], scenario: Path, tmp_path: Path) -> None:
    """Needs the testbed: run it under ``flock /tmp/chaosbench-testbed.lock``."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    out = run(env, str(CLI), "run", str(scenario), "--out", str(tmp_path), "--no-eval", timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (labels,) = tmp_path.glob("*/labels.jsonl")
    (record,) = [json.loads(line) for line in labels.read_text().splitlines()]
    assert record["status"] == "completed", record["reason"]
    assert record["ground_truth"]["fault_id"] == FAULT and record["ground_truth"]["verified"] is True


def test_a_broken_plugin_is_one_error_line_naming_it(tmp_path: Path) -> None:
    dist = tmp_path / "broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[chaosbench.faults]\nbroken = tests.faults.no_such_module\n")
    out = run({**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}, str(CLI), "faults")
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode == 5 and len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith("error: tests.faults.no_such_module (entry point 'broken' in chaosbench.faults)")
