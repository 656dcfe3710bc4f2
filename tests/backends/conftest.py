"""Fixtures for the local testbed tests: a free block of host ports per test, root checks."""

from __future__ import annotations

import os
import socket

import pytest


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def port_base(monkeypatch) -> int:
    """A CHAOSBENCH_PORT_BASE whose six ports are free (other testbeds may run on this machine)."""
    for base in range(21000 + (os.getpid() % 500) * 20, 32000, 10):  # below the ephemeral ports
        if all(_free(base + i) for i in range(6)):
            monkeypatch.setenv("CHAOSBENCH_PORT_BASE", str(base))
            return base
    pytest.skip("no free port block")


@pytest.fixture
def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, cgroups)")
