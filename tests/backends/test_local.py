"""The local testbed's infrastructure on this machine: namespaces, bridge, cgroups, exporter, teardown, cleanup."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chaosbench.backends.local import preflight
from chaosbench.backends.local.cleanup import leftovers
from chaosbench.backends.local.plan import read_plan
from chaosbench.backends.local.testbed import LocalTestbed, start_infra
from chaosbench.errors import PreflightFailed


def _no_trace_of(plan) -> None:
    left = leftovers(plan)
    assert left.empty(), left.describe()
    assert not any(n.netns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
                   for n in plan.nodes)
    assert not Path(plan.ray_tmp_root).exists()
    for d in plan.cgroup_run_dirs:
        assert not Path(d).exists(), d


@pytest.mark.root
@pytest.mark.slow
def test_nodes_up_and_down_leave_nothing(tmp_path, port_base, need_root):
    plan = start_infra(tmp_path / "run", 2, isolated=True, with_ray=False)
    tb = LocalTestbed(plan=plan, engine="none", control_dir=tmp_path / "c", trace_dir=tmp_path / "t")
    try:
        assert (tmp_path / "run" / "testbed.json").is_file()
        n0, n1 = plan.nodes
        # a server started through the node wrapper lands in node-1's cgroups and namespace ...
        wrapper = Path(plan.run_dir) / "bin" / "node-exec.sh"
        proc = subprocess.Popen([str(wrapper), n1.netns, *sorted(set(n1.cgroups.values())), "--", sys.executable,
                                 "-m", "http.server", "18080", "--bind", n1.ip], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while proc.pid not in tb.node_pids("node-1") and time.time() < deadline:
            time.sleep(0.1)
        assert proc.pid in tb.node_pids("node-1") and proc.pid not in tb.node_pids("node-0")
        # ... and node-0 reaches it across the bridge
        probe = (f"import socket,time\nfor _ in range(100):\n  try: socket.create_connection(('{n1.ip}', 18080), 1); "
                 "break\n  except OSError: time.sleep(0.2)\nelse: raise SystemExit(1)")
        reach = subprocess.run(["ip", "netns", "exec", n0.netns, sys.executable, "-c", probe], capture_output=True,
                               text=True, timeout=60)
        assert reach.returncode == 0, reach.stderr
        text = httpx.get(f"http://127.0.0.1:{plan.ports.exporter}/metrics", timeout=5).text
        assert 'chaosbench_node_processes{component="node-1"} 1.0' in text
        assert 'chaosbench_node_network_transmit_bytes_total{component="node-0"}' in text
        prom = httpx.get(f"http://127.0.0.1:{plan.ports.prometheus}/-/ready", timeout=5)
        assert prom.status_code == 200
    finally:
        left = tb.teardown()
    assert left.empty(), left.describe()
    assert proc.wait(timeout=10) != 0, "the node's process was stopped by teardown"
    _no_trace_of(plan)


@pytest.mark.root
@pytest.mark.slow
def test_cleanup_command_undoes_a_crashed_run(tmp_path, port_base, need_root):
    from chaosbench.cli import main

    plan = start_infra(tmp_path / "run", 2, isolated=True, with_ray=False)  # ... and the harness "crashes" here
    assert not leftovers(plan).empty()
    assert main(["cleanup", str(tmp_path)]) == 0
    _no_trace_of(read_plan(tmp_path / "run"))
    assert main(["cleanup", str(tmp_path)]) == 0  # idempotent


def test_port_in_use_is_refused_before_anything_starts(tmp_path, port_base):
    with socket.socket() as s:
        s.bind(("127.0.0.1", port_base))  # the Prometheus port
        s.listen()
        with pytest.raises(PreflightFailed, match=f"port already in use on 127.0.0.1: prometheus {port_base}"):
            start_infra(tmp_path / "run", 2, isolated=False)
    assert not (tmp_path / "run" / "testbed.json").exists()


def test_missing_prometheus_is_named(tmp_path, port_base, monkeypatch):
    monkeypatch.setattr(preflight, "PROMETHEUS_BIN", "/nonexistent/prometheus")
    with pytest.raises(PreflightFailed, match="missing /nonexistent/prometheus: install with"):
        start_infra(tmp_path / "run", 2, isolated=False)
