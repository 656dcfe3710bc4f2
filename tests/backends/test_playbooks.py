from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("playbook", ["deploy.yml", "teardown.yml"])
def test_playbook_syntax(playbook):
    bin_dir = Path(sys.executable).parent
    res = subprocess.run([str(bin_dir / "ansible-playbook"), "--syntax-check", "-i", "localhost,",
                          str(REPO / "playbooks" / "local" / playbook)], capture_output=True, text=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "ANSIBLE_ROLES_PATH": str(REPO / "playbooks" / "roles"),
                              "HOME": "/tmp"}, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
