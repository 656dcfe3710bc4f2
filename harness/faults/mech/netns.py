"""Run a command on an emulated node: inside its network namespace (``ip netns exec``), or on this machine
when the node has none (the no-root layout). The one place that builds that command line."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence

from chaosbench.errors import CommandFailed

TIMEOUT_S = 15.0


def command(argv: Sequence[str], netns: str | None) -> list[str]:
    """``argv`` as run inside ``netns`` (unchanged without one)."""
    return (["ip", "netns", "exec", netns] if netns else []) + list(argv)


def run(argv: Sequence[str], netns: str | None, *, check: bool = True,
        timeout_s: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``netns`` and capture its output. A hang raises CommandFailed; so does a non-zero exit
    with ``check`` (the message names the command and its error output)."""
    cmd = command(argv, netns)
    try:
        res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{shlex.join(cmd)}: timed out after {timeout_s:g} s") from exc
    if check and res.returncode != 0:
        raise CommandFailed(f"{shlex.join(cmd)}: {res.stderr.strip() or res.stdout.strip() or f'exit {res.returncode}'}")
    return res
