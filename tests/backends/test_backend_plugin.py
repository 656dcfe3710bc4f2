"""A backend is one registration: a ``Backend`` under the entry-point group ``chaosbench.backends`` is known to the
scenario schema, the CLI, the deploy step and the ground truth, with no chaosbench file edited."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from chaosbench import backends as backends_mod
from chaosbench.errors import InputInvalid, PluginInvalid

REPO = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "chaosbench"


def _site(root: Path, line: str) -> Path:
    """A distribution's metadata declaring ``line`` in the backends group: what pip leaves after an install."""
    dist = root / "chaosbench_fake_backend-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: chaosbench-fake-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[chaosbench.backends]\n{line}\n")
    return root


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = _site(tmp_path / "site", "fake = tests.backends.plugin_backend:BACKEND")
    monkeypatch.syspath_prepend(str(site))
    backends_mod.backends.cache_clear()
    yield site
    backends_mod.backends.cache_clear()


def _scenario(tmp_path: Path, backend: str) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(f"include: {REPO}/scenarios/_base.yaml\nmetadata: {{name: tiny}}\n"
                    f"spec:\n  deployment: {{backend: {backend}}}\n  faults: []\n")
    return path


def test_shipped_backends_are_the_only_ones_without_plugins():
    assert list(backends_mod.backends()) == ["local", "k8s"]
    assert backends_mod.backend("local").needs_root and backends_mod.backend("k8s").dry_run
    with pytest.raises(InputInvalid, match=r"unknown backend 'k9s' \(did you mean 'k8s'\?\); known: local, k8s"):
        backends_mod.backend("k9s")


def test_a_plugin_backend_validates_deploys_and_sets_the_ground_truth(installed: Path, tmp_path: Path):
    from chaosbench.case import CaseWriter
    from chaosbench.faults.catalog import get_fault
    from chaosbench.faults.lifecycle import ground_truth
    from chaosbench.scenario import load_scenario
    from chaosbench.stages import Recorder
    from chaosbench.testbeds import deploy

    scenario = load_scenario(_scenario(tmp_path, "fake"))
    assert scenario.spec.deployment.backend == "fake"
    bed = deploy(scenario, tmp_path / "run", Recorder(CaseWriter(tmp_path / "run" / "cases" / "abc123")), "", None)
    assert type(bed.testbed).__name__ == "PluginTestbed" and bed.testbed.backend == "fake"
    spec = get_fault("gpu-power-cap")
    step = SimpleNamespace(id=spec.id, target=SimpleNamespace(rank=0, node=None, component="rank-0"))
    truth = ground_truth(bed.testbed, step, spec, 1.0, 2.0, True)
    assert (truth["mechanism"], truth["realism"]) == (spec.cluster_mechanism, "real")  # its fault_site: "cluster"


def test_a_wrong_plugin_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    site = _site(tmp_path / "site", "other = tests.backends.plugin_backend:BACKEND")
    monkeypatch.syspath_prepend(str(site))
    backends_mod.backends.cache_clear()
    try:
        with pytest.raises(PluginInvalid, match=r"entry point's name must be the backend's name 'fake'"):
            backends_mod.backends()
    finally:
        backends_mod.backends.cache_clear()


def _cli(site: Path | None, *argv: str) -> subprocess.CompletedProcess[str]:
    path = [str(site)] if site else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(REPO)])}
    return subprocess.run([str(CLI), *argv], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_cli_knows_plugin_backends_and_names_unknown_ones(tmp_path: Path):
    site = _site(tmp_path / "site", "fake = tests.backends.plugin_backend:BACKEND")
    scenario = _scenario(tmp_path, "fake")
    assert _cli(site, "validate", str(scenario)).returncode == 0
    out = _cli(None, "validate", str(scenario))
    assert out.returncode == 2 and "unknown backend 'fake'" in out.stdout + out.stderr
    out = _cli(site, "run", str(scenario), "--dry-run", "--out", str(tmp_path))
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1 and "Traceback" not in out.stderr
    assert "the fake backend has no dry run; add --backend k8s" in lines[0]
    out = _cli(site, "run", str(scenario), "--backend", "nosuch")
    assert out.returncode != 0 and "unknown backend 'nosuch'" in out.stdout + out.stderr
