"""Run a playbook of playbooks/ through ansible-runner (both backends), against localhost or an inventory."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaosbench.errors import PreflightFailed
from chaosbench.signals import handlers_kept

if TYPE_CHECKING:
    from ansible_runner import Runner

REPO = Path(__file__).resolve().parents[3]
PLAYBOOKS = REPO / "playbooks"


def _first_failure(runner: Runner) -> str:
    for ev in runner.events:
        if ev.get("event") in ("runner_on_failed", "runner_on_unreachable", "runner_item_on_failed"):
            data = ev.get("event_data", {})
            res = data.get("res", {})
            msg = (res.get("stderr") or res.get("msg") or "").strip().splitlines()
            return f"task {data.get('task', '?')!r}: {msg[-1] if msg else 'failed'}"
    return f"status {runner.status}, rc {runner.rc}"


def run_playbook(name: str, extravars: dict[str, Any], private_dir: Path) -> None:
    """Run ``playbooks/local/<name>`` against localhost (see ``play``)."""
    play(PLAYBOOKS / "local" / name, {"chaosbench_root": str(REPO), **extravars}, private_dir)


def play(playbook: Path, extravars: dict[str, Any], private_dir: Path, inventory: str | None = None,
         rotate_artifacts: int = 2) -> None:
    """Run ``playbook`` (against localhost unless ``inventory`` names an inventory file). Ctrl-C/SIGTERM while it
    runs raises KeyboardInterrupt; a failure raises PreflightFailed naming the first failed task."""
    import ansible_runner

    private_dir.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    envvars = {
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",  # ansible-runner finds ansible-playbook on PATH
        "ANSIBLE_ROLES_PATH": str(PLAYBOOKS / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
    }
    with handlers_kept():  # ansible-runner replaces the SIGINT/SIGTERM handlers for good: give ours back
        runner = ansible_runner.run(
            private_data_dir=str(private_dir),
            playbook=str(playbook),
            inventory=inventory or f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}",
            extravars=extravars,
            envvars=envvars,
            quiet=True,
            rotate_artifacts=rotate_artifacts,
        )
    name = playbook.relative_to(PLAYBOOKS) if playbook.is_relative_to(PLAYBOOKS) else playbook
    if runner.status == "canceled":  # Ctrl-C/SIGTERM while the playbook ran
        raise KeyboardInterrupt(f"playbook {name} interrupted")
    if runner.rc != 0 or runner.status != "successful":
        raise PreflightFailed(f"playbook {name} failed: {_first_failure(runner)} (log: {private_dir}/artifacts)")
