from __future__ import annotations

import pytest

from chaosbench.backends.local.plan import Ports, make_plan, read_plan
from chaosbench.backends.local.preflight import check_faults, no_root_message, root_only_faults
from chaosbench.backends.local.testbed import ray_nodes
from chaosbench.errors import InputInvalid, PreflightFailed
from chaosbench.faults.catalog import FAULT_IDS


def test_isolated_plan_names_fit_linux_limits(tmp_path, need_root):
    plan = make_plan(tmp_path, 3, isolated=True, run_id="abc123")
    assert [n.name for n in plan.nodes] == ["node-0", "node-1", "node-2"]
    assert len({n.ip for n in plan.nodes} | {plan.bridge_ip}) == 4
    for link in [plan.bridge, *(n.veth_host for n in plan.nodes)]:
        assert link and len(link) <= 15, link  # IFNAMSIZ
    assert all(n.netns.startswith("cbtb-abc123") for n in plan.nodes)
    assert all("abc123" in d and d.endswith(n.name) for n in plan.nodes for d in n.cgroups.values())
    assert plan.driver is not None and plan.driver.ip == plan.bridge_ip
    assert len(plan.ray_tmp_root) < 30, "Ray's socket paths must stay short"


def test_state_file_round_trip(tmp_path):
    plan = make_plan(tmp_path, 2, isolated=False, run_id="r00001")
    plan.write()
    again = read_plan(tmp_path)
    assert again == plan
    with pytest.raises(InputInvalid, match="no testbed state file"):
        read_plan(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "testbed.json").write_text("{")
    with pytest.raises(InputInvalid, match="not a testbed state file"):
        read_plan(tmp_path / "bad")


def test_loopback_plan_has_one_ray_node_with_every_resource(tmp_path):
    plan = make_plan(tmp_path, 2, isolated=False, run_id="r00002")
    nodes = ray_nodes(plan)
    assert len(nodes) == 1 and nodes[0]["resources"] == {"node-0": 1000, "node-1": 1000}
    assert all(n.netns is None and not n.cgroups for n in plan.nodes)


def test_ports_from_env(monkeypatch):
    monkeypatch.setenv("CHAOSBENCH_PORT_BASE", "30000")
    p = Ports.from_env()
    assert (p.prometheus, p.node_exporter, p.exporter, p.driver_agent) == (30000, 30001, 30002, 30005)
    for bad in ("12000", "80", "x"):
        monkeypatch.setenv("CHAOSBENCH_PORT_BASE", bad)
        with pytest.raises(InputInvalid):
            Ports.from_env()


def test_no_root_message_lists_the_faults_that_need_root():
    root_only = root_only_faults()
    assert set(root_only) == {"cpu-contention", "cpu-throttle", "host-memory-pressure", "interconnect-degradation",
                              "network-delay"} and set(root_only) <= set(FAULT_IDS)
    msg = no_root_message()
    assert all(f"{f} ({why})" in msg for f, why in root_only.items())
    with pytest.raises(PreflightFailed, match="cpu-throttle cannot run"):
        check_faults(["nccl-hang", "cpu-throttle"], isolated=False)
    check_faults(["nccl-hang", "gpu-clock-lock"], isolated=False)
    check_faults(["cpu-throttle"], isolated=True)
