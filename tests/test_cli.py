"""The CLI as a user runs it: a real subprocess, exit codes, one line per problem, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from chaosbench.cli import main; main()", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


def test_validate_shipped_scenarios_passes():
    r = cli("validate", "scenarios/")
    assert r.returncode == 0, r.stderr
    assert "14 file(s) valid" in r.stdout or "file(s) valid" in r.stdout


def test_faults_json_lists_the_eleven():
    r = cli("faults", "--json")
    assert r.returncode == 0
    ids = [f["id"] for f in json.loads(r.stdout)]
    assert len(ids) == 11 and len(set(ids)) == 11
    assert all(f["local"] in ("real", "emulated") for f in json.loads(r.stdout))


def test_scenarios_list_json():
    r = cli("scenarios", "list", "--json")
    assert r.returncode == 0
    names = {rec["name"] for rec in json.loads(r.stdout)}
    assert {"clean", "network-delay", "smoke", "core"} <= names


def test_schema_is_json():
    r = cli("schema")
    assert r.returncode == 0 and "Scenario" in json.loads(r.stdout)["$defs"]


def test_mixed_directory_reports_each_bad_file_and_exits_2(tmp_path):
    good = "apiVersion: chaosbench/v1alpha1\nkind: Scenario\nmetadata: {name: good}\nspec:\n  faults: []\n"
    (tmp_path / "good.yaml").write_text(good)
    (tmp_path / "syntax.yaml").write_text("kind: Scenario\nmetadata: [unclosed\n")
    (tmp_path / "unknown.yaml").write_text(good.replace("faults: []", "faults: [{id: gpu-melt, target: {rank: 0}, start: 20s, duration: 5s}]"))
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    (tmp_path / "empty.yaml").write_text("")
    r = cli("validate", str(tmp_path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 4, r.stderr
    assert any("syntax.yaml: YAML syntax error" in line for line in err)
    assert any("unknown.yaml: spec.faults[0].id: unknown fault id 'gpu-melt'" in line for line in err)
    assert any("binary.yaml: not a text file" in line for line in err)
    assert any("empty.yaml: empty file" in line for line in err)
    assert "ok " in r.stdout and "good.yaml" in r.stdout


@pytest.mark.parametrize("args", [["validate", "does/not/exist.yaml"], ["scenarios", "list", "--path", "nope"]])
def test_missing_paths_exit_2(args):
    r = cli(*args)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_usage_error_is_not_a_traceback():
    r = cli("validate")
    assert r.returncode == 2 and "Traceback" not in r.stderr



def test_root_need_is_read_from_the_documents_own_backends():
    from chaosbench.campaign import load_campaign
    from chaosbench.cli.run import _needs_root
    from chaosbench.scenario import load_scenario

    campaign = REPO / "scenarios" / "campaigns" / "layouts.yaml"
    assert _needs_root(load_campaign(campaign), campaign)  # its base runs on the local backend
    clean = REPO / "scenarios" / "layouts" / "dp2-tp4" / "clean.yaml"
    assert _needs_root(load_scenario(clean), clean)
    assert not _needs_root(load_scenario(clean, {"deployment": {"backend": "k8s"}}), clean)
