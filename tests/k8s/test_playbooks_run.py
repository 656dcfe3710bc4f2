"""The k8s playbooks really run (ansible-playbook, rendered vars.yml) against stand-in kubectl and helm.

The stand-ins log every call and answer like the real tools, so templating, loops,
conditions and the commands the playbooks build are checked without a cluster.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from chaosbench.backends.k8s import dry_run
from chaosbench.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]

FAKE = r'''#!/bin/sh
# stand-in for {tool}: log the call, answer like the real tool
printf '%s\n' "{tool} $*" >> "$CB_FAKE_LOG"
case "$*" in
  "version --output=json") echo '{{}}' ;;
  *"label node"*) echo "node/$3 labeled" ;;
  "create namespace"*) echo "namespace/$3 created" ;;
  *"allocatable.nvidia"*) echo "8 8" ;;
  *"chaosbench\.io/node}}="*) printf 'node-0=gpu-a-17\nnode-1=gpu-b-03\n' ;;
  "get nodes -l"*) echo "gpu-b-03" ;;
  "get pods"*) echo "chaosbench-fault-agent-8h3vn" ;;
  exec*verify*) echo '{{"verified": true, "power_limit_w": 150.0}}' ;;
  exec*) echo '{{"ok": true}}' ;;
  apply*) echo "thing/x configured" ;;
  delete*) echo "thing/x deleted" ;;
  *) echo "ok" ;;
esac
'''


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name in ("gpu-power-cap", "network-delay"):
        out[name] = dry_run(load_scenario(REPO / "scenarios" / f"{name}.yaml"), tmp_path_factory.mktemp(name))
    return out


def _play(tmp_path: Path, playbook: str, k8s_dir: Path, *extra: str) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("kubectl", "helm"):
        (bin_dir / tool).write_text(FAKE.format(tool=tool))
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "CB_FAKE_LOG": str(log), "ANSIBLE_ROLES_PATH": str(REPO / "playbooks" / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_HOME": str(tmp_path / ".ansible"),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / ".ansible" / "tmp"), "HOME": str(tmp_path)}
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"@{k8s_dir / 'vars.yml'}", *extra,
           str(REPO / "playbooks" / "k8s" / playbook)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    return log.read_text().splitlines() if log.is_file() else []


def test_site_installs_services_labels_nodes_and_deploys(rendered, tmp_path):
    k8s_dir = rendered["gpu-power-cap"]
    calls = _play(tmp_path, "site.yml", k8s_dir)  # no cb_node_map, no inventory: the labels on the cluster
    assert "kubectl label node gpu-b-03 chaosbench.io/node=node-1 --overwrite" in calls
    helm = [shlex.split(c) for c in calls if c.startswith("helm upgrade --install")]
    charts = {c[3]: c for c in helm}
    assert set(charts) == {"gpu-operator", "kube-prometheus-stack", "kuberay-operator", "chaos-mesh"}
    vars_ = __import__("yaml").safe_load((k8s_dir / "vars.yml").read_text())
    gpu = charts["gpu-operator"]
    assert gpu[gpu.index("--version") + 1] == vars_["cb_charts"]["gpu_operator"]["version"]
    assert gpu[gpu.index("--values") + 1] == str(k8s_dir / "values" / "gpu-operator.yaml")
    assert "values/gpu-operator-k3s.yaml" not in " ".join(gpu)  # existing cluster: no k3s overlay
    applied = " ".join(c for c in calls if c.startswith("kubectl apply"))
    for manifest in ("00-namespace", "10-dcgm-counters", "20-profiler", "30-rayservice", "40-monitors",
                     "50-fault-agent"):
        assert f"{manifest}.yaml" in applied
    assert any(c.startswith("kubectl wait rayservice/cb-gpu-power-cap") for c in calls)
    assert not any("60-locust" in c for c in calls)  # the load starts with the run, not at deploy


def test_site_refuses_an_incomplete_node_map(rendered, tmp_path):
    with pytest.raises(AssertionError, match="cb_node_map must map"):
        _play(tmp_path, "site.yml", rendered["gpu-power-cap"], "-e", json.dumps({"cb_node_map": {"node-0": "a"}}))


def test_inject_verify_recover_agent_step(rendered, tmp_path):
    k8s_dir = rendered["gpu-power-cap"]
    plan = json.loads((k8s_dir / "faults" / "plan.json").read_text())[0]
    for action in ("inject", "verify", "recover"):
        calls = _play(tmp_path, "inject.yml", k8s_dir, "-e", f"cb_action={action}")
        execs = [c for c in calls if c.startswith("kubectl exec")]
        want = " ".join(plan[f"agent_{action}"][0]["argv"])
        assert execs == [f"kubectl exec --namespace chaosbench chaosbench-fault-agent-8h3vn -- {want}"]
        assert f"kubectl get nodes -l chaosbench.io/node={plan['node']} -o jsonpath={{.items[0].metadata.name}}" \
            in calls


def test_inject_chaos_mesh_step_and_teardown(rendered, tmp_path):
    k8s_dir = rendered["network-delay"]
    fault_file = k8s_dir / "faults" / "00-network-delay.yaml"
    calls = _play(tmp_path, "inject.yml", k8s_dir, "-e", "cb_action=inject")
    assert calls == [f"kubectl apply -f {fault_file}"]
    calls = _play(tmp_path, "teardown.yml", k8s_dir)
    assert calls[0] == f"kubectl delete -f {fault_file} --ignore-not-found --wait=true"
    deletes = [c for c in calls if c.startswith("kubectl delete")]
    assert "60-locust.yaml" in deletes[1] and "00-namespace.yaml" in deletes[-1]  # load first, namespace last
    assert not any(c.startswith("helm") for c in calls)  # services stay unless asked
