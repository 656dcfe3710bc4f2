"""The k8s playbooks and roles: ansible-playbook --syntax-check each, ansible-lint all in one call."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = sorted((REPO / "playbooks" / "k8s").glob("*.yml"))
ENTRY_PLAYBOOKS = ["site.yml", "deploy.yml", "inject.yml", "collect.yml", "teardown.yml"]
ROLES = sorted(p for p in (REPO / "playbooks" / "roles").glob("k8s_*") if p.is_dir())


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "ANSIBLE_ROLES_PATH": str(REPO / "playbooks" / "roles"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": "/tmp/.ansible-cb-k8s", "ANSIBLE_HOME": "/tmp/.ansible-cb-k8s"}


def _tool(name: str) -> str:
    path = shutil.which(name, path=_env()["PATH"])
    if path is None:
        pytest.fail(f"{name} not installed (pip install ansible-core ansible-lint)")
    return path


def test_entry_playbooks_and_roles_exist():
    assert [p.name for p in PLAYBOOKS if p.name in ENTRY_PLAYBOOKS] == sorted(ENTRY_PLAYBOOKS)
    names = {p.name for p in ROLES}
    assert {"k8s_cluster", "k8s_gpu_operator", "k8s_kuberay", "k8s_observability", "k8s_chaos_mesh",
            "k8s_fault_agent", "k8s_locust"} <= names


def test_syntax_check_every_playbook():
    # one ansible-playbook call checks them all (each call costs a few seconds of start-up)
    paths = [str(REPO / "playbooks" / "k8s" / p) for p in ENTRY_PLAYBOOKS]
    out = subprocess.run([_tool("ansible-playbook"), "--syntax-check", "-i", "localhost,", *paths],
                         capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("playbook: ") == len(ENTRY_PLAYBOOKS), out.stdout


def test_syntax_check_catches_a_broken_playbook(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text("- name: broken\n  hosts: localhost\n  tasks:\n    - ansible.builtin.command: {argv: [true]}\n"
                   "      bogus_keyword: 1\n")
    out = subprocess.run([_tool("ansible-playbook"), "--syntax-check", "-i", "localhost,", str(bad)],
                         capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode != 0


def test_ansible_lint_production_profile():
    paths = [str(REPO / "playbooks" / "k8s")] + [str(p) for p in ROLES]
    out = subprocess.run([_tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor", *paths],
                         capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
