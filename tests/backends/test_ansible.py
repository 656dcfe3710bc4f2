"""The one ansible-runner call both backends use: a failed task named in one line, our signal handlers kept."""

from __future__ import annotations

import signal

import pytest

from chaosbench import signals
from chaosbench.backends.local.ansible import play
from chaosbench.errors import PreflightFailed

PLAY = "- hosts: localhost\n  gather_facts: false\n  tasks:\n    - name: {name}\n      command: {cmd}\n"


def test_a_playbook_runs_with_our_handlers_kept_and_a_failed_task_is_named(tmp_path):
    ok, bad = tmp_path / "ok.yml", tmp_path / "bad.yml"
    ok.write_text(PLAY.format(name="say hi", cmd="/bin/true"))
    bad.write_text(PLAY.format(name="break here", cmd="/bin/false"))
    with signals.interrupts_raise():
        ours = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        play(ok, {}, tmp_path / "ok")
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == ours
    with pytest.raises(PreflightFailed, match=r"playbook .*bad.yml failed: task 'break here'"):
        play(bad, {}, tmp_path / "bad")
