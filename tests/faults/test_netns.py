"""The one "run a command on an emulated node" helper: the command line it builds and the error it raises."""

from __future__ import annotations

import pytest

from chaosbench.errors import ChaosbenchError, CommandFailed
from chaosbench.faults.mech import iptables, netns, tc


def test_the_command_enters_the_namespace_only_when_there_is_one():
    assert netns.command(["tc", "qdisc"], "cbtb-x-n0") == ["ip", "netns", "exec", "cbtb-x-n0", "tc", "qdisc"]
    assert netns.command(("tc", "qdisc"), None) == ["tc", "qdisc"]


def test_a_failing_command_raises_the_projects_error_with_its_stderr():
    with pytest.raises(CommandFailed, match=r"sh -c .*: no such qdisc") as info:
        netns.run(["sh", "-c", "echo 'no such qdisc' >&2; exit 2"], None)
    assert isinstance(info.value, ChaosbenchError) and info.value.exit_code == 1


def test_unchecked_runs_return_the_exit_status_and_hangs_always_raise():
    assert netns.run(["sh", "-c", "echo hi; exit 3"], None, check=False).returncode == 3
    assert netns.run(["sh", "-c", "echo hi"], None).stdout == "hi\n"
    with pytest.raises(CommandFailed, match="timed out after 0.2 s"):
        netns.run(["sleep", "5"], None, check=False, timeout_s=0.2)


def test_tc_and_iptables_mechanisms_raise_it_too(monkeypatch):
    seen: list[list[str]] = []
    real = netns.run

    def spy(argv, ns, **kw):
        seen.append(list(argv))
        return real(["sh", "-c", "echo 'Cannot find device' >&2; exit 1"], None, **kw)

    monkeypatch.setattr(netns, "run", spy)
    monkeypatch.setattr(iptables, "_run", spy)
    with pytest.raises(CommandFailed, match="Cannot find device"):
        tc.add_tbf("cbnone0", None, "cb01:", 10.0, 32)
    with pytest.raises(CommandFailed, match="Cannot find device"):
        iptables.append(None, "OUTPUT", "k", ["-p", "tcp"], ["-j", "ACCEPT"])
    assert seen[0][:3] == ["tc", "qdisc", "replace"] and seen[1][0] == "iptables"
