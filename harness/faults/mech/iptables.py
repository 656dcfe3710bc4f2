"""iptables rules of a fault, tagged ``-m comment --comment chaosbench:<key>`` so they can always be found.

Rules live in the node's network namespace (filter table), on the node side of its veth. Counters and removal
go through ``iptables-save -c``: every rule carrying the fault's comment is listed and deleted, whatever
happened to the harness that added it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from chaosbench.errors import CommandFailed
from chaosbench.faults.mech.netns import run as _run

COMMENT_PREFIX = "chaosbench:"


def comment(key: str) -> str:
    return f"{COMMENT_PREFIX}{key}"


@dataclass(frozen=True)
class Rule:
    chain: str
    spec: str  # the rule as iptables-save prints it, without "-A <chain>"
    packets: int
    bytes: int


_LINE = re.compile(r"^\[(\d+):(\d+)\] -A (\S+) (.*)$")


def rules(netns: str | None, key: str) -> list[Rule]:
    """Rules of fault ``key`` with their counters (empty when the namespace is gone)."""
    res = _run(["iptables-save", "-c", "-t", "filter"], netns, check=False)
    if res.returncode != 0:
        return []
    tag = comment(key)
    out = []
    for line in res.stdout.splitlines():
        m = _LINE.match(line)
        if m and tag in shlex.split(m.group(4)):
            out.append(Rule(m.group(3), m.group(4), int(m.group(1)), int(m.group(2))))
    return out


def append(netns: str | None, chain: str, key: str, match: list[str], target: list[str]) -> None:
    _run(["iptables", "-t", "filter", "-A", chain, *match, "-m", "comment", "--comment", comment(key), *target], netns)


def remove_all(netns: str | None, key: str) -> int:
    """Delete every rule of fault ``key``; returns how many were deleted."""
    n = 0
    for rule in rules(netns, key):
        _run(["iptables", "-t", "filter", "-D", rule.chain, *shlex.split(rule.spec)], netns, check=False)
        n += 1
    left = rules(netns, key)
    if left:
        raise CommandFailed(f"iptables rules of {key} could not be removed: {[r.spec for r in left]}")
    return n
