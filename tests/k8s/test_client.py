"""K8sClient against recorded API responses: the real kubernetes client, a replaying REST layer."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from kubernetes import client as k8s

from chaosbench.backends.k8s.client import K8sClient
from chaosbench.errors import FaultNotVerified, PreflightFailed

RECORDED = Path(__file__).parent / "recorded"
NS = "chaosbench"
CHAOS = f"/apis/chaos-mesh.org/v1alpha1/namespaces/{NS}/networkchaos"


class _Response:
    def __init__(self, status: int, body: bytes, content_type: str):
        self.status, self.reason, self.data = status, {200: "OK", 201: "Created"}.get(status, "Error"), body
        self.headers = {"content-type": content_type}

    def read(self) -> bytes:
        return self.data

    def getheaders(self):
        return self.headers

    def getheader(self, name, default=None):
        return self.headers.get(name.lower(), default)


class ReplayRest:
    """Stands in for kubernetes.client.rest.RESTClientObject: (method, path) -> recorded responses in order."""

    def __init__(self, routes: dict[tuple[str, str], list[tuple[int, str]]]):
        self.routes = {k: list(v) for k, v in routes.items()}
        self.calls: list[tuple[str, str, dict, object]] = []

    def request(self, method, url, headers=None, body=None, post_params=None, _request_timeout=None):
        parsed = urlparse(url)
        self.calls.append((method, parsed.path, parse_qs(parsed.query), body))
        queue = self.routes.get((method, parsed.path))
        if not queue:
            raise AssertionError(f"unrecorded call {method} {parsed.path}")
        status, name = queue.pop(0) if len(queue) > 1 else queue[0]
        path = RECORDED / name
        kind = "text/plain" if name.endswith(".txt") else "application/json"
        return _Response(status, path.read_bytes(), kind)


def make_client(routes, **kw) -> tuple[K8sClient, ReplayRest]:
    api = k8s.ApiClient(k8s.Configuration(host="https://cluster.invalid:6443"))
    rest = ReplayRest(routes)
    api.rest_client = rest
    return K8sClient(NS, api_client=api, sleep=lambda s: None, **kw), rest


def test_node_map_from_labels():
    c, rest = make_client({("GET", "/api/v1/nodes"): [(200, "nodes.json")]})
    assert c.node_map() == {"node-0": "gpu-a-17", "node-1": "gpu-b-03"}
    assert rest.calls[0][2]["labelSelector"] == ["chaosbench.io/node"]


def test_pods_readiness_and_labels():
    c, rest = make_client({("GET", f"/api/v1/namespaces/{NS}/pods"): [(200, "pods_chaosbench.json")]})
    pods = c.pods("app.kubernetes.io/part-of=chaosbench")
    assert [p.ready for p in pods] == [True, True, False]
    assert pods[1].labels["chaosbench.io/node"] == "node-0" and pods[1].node == "gpu-a-17"
    assert rest.calls[0][2]["labelSelector"] == ["app.kubernetes.io/part-of=chaosbench"]


def test_api_error_is_one_line_preflight():
    c, _ = make_client({("GET", "/api/v1/nodes"): [(403, "status_403.json")]})
    with pytest.raises(PreflightFailed, match="list nodes: 403"):
        c.node_map()


def test_wait_rayservice_polls_until_ready():
    path = f"/apis/ray.io/v1/namespaces/{NS}/rayservices/cb-clean"
    c, rest = make_client({("GET", path): [(200, "rayservice_pending.json"), (200, "rayservice_pending.json"),
                                           (200, "rayservice_ready.json")]})
    obj = c.wait_rayservice_ready("cb-clean", timeout_s=60)
    assert obj["status"]["numServeEndpoints"] == 3
    assert len(rest.calls) == 3


def test_wait_rayservice_times_out():
    path = f"/apis/ray.io/v1/namespaces/{NS}/rayservices/cb-clean"
    ticks = iter(range(0, 10_000, 10))
    c, _ = make_client({("GET", path): [(200, "rayservice_pending.json")]}, clock=lambda: next(ticks))
    with pytest.raises(PreflightFailed, match="not ready after 30s"):
        c.wait_rayservice_ready("cb-clean", timeout_s=30)


def test_chaos_create_replaces_existing_and_reads_status():
    obj = json.loads((RECORDED / "networkchaos_injected.json").read_text())
    del obj["status"]
    name = obj["metadata"]["name"]
    c, rest = make_client({
        ("POST", CHAOS): [(409, "status_409.json"), (201, "networkchaos_selected.json")],
        ("DELETE", f"{CHAOS}/{name}"): [(200, "networkchaos_selected.json")],
        ("GET", f"{CHAOS}/{name}"): [(200, "networkchaos_selected.json"), (200, "networkchaos_injected.json")],
    })
    c.create_chaos(obj)
    assert [m for m, *_ in rest.calls] == ["POST", "DELETE", "POST"]
    assert json.loads(rest.calls[0][3]) == obj if isinstance(rest.calls[0][3], str) else rest.calls[0][3] == obj
    assert c.chaos_injected(obj) is False
    assert c.chaos_injected(obj) is True


def test_chaos_delete_tolerates_gone():
    obj = json.loads((RECORDED / "networkchaos_injected.json").read_text())
    c, _ = make_client({("DELETE", f"{CHAOS}/{obj['metadata']['name']}"): [(404, "status_404.json")]})
    assert c.delete_chaos(obj) is False


def test_logs_text_with_timestamps():
    pod = "cb-clean-raycluster-x7k2p-head-9wq4d"
    c, rest = make_client({("GET", f"/api/v1/namespaces/{NS}/pods/{pod}/log"): [(200, "head_log.txt")]})
    text = c.logs(pod, since_seconds=600)
    assert text.startswith("2026-11-22T05:00:01")
    assert rest.calls[0][2]["timestamps"] == ["true"] and rest.calls[0][2]["sinceSeconds"] == ["600"]


class FakeWS:
    """The websocket exec client's surface used by K8sClient.exec (kubernetes.stream.ws_client.WSClient)."""

    def __init__(self, stdout: str, stderr: str = "", rc: int = 0):
        self._out, self._err, self.returncode, self.closed = stdout, stderr, rc, False

    def run_forever(self, timeout=None):
        pass

    def read_stdout(self):
        return self._out

    def read_stderr(self):
        return self._err

    def close(self):
        self.closed = True


def test_run_agent_on_the_target_node():
    seen = {}

    def stream(fn, pod, ns, **kw):
        seen.update(pod=pod, ns=ns, command=kw["command"], fn=fn.__name__)
        return FakeWS('{"injected": "nccl-hang", "stopped_pid": 4242}\n')

    c, _ = make_client({("GET", f"/api/v1/namespaces/{NS}/pods"): [(200, "pods_agent.json")]}, exec_stream=stream)
    argv = ("python3", "/opt/agent/fault_agent.py", "inject", "sigstop", "--gpu", "1")
    answer = c.run_agent("node-1", argv, node_map={"node-0": "gpu-a-17", "node-1": "gpu-b-03"})
    assert answer["stopped_pid"] == 4242
    assert seen == {"pod": "chaosbench-fault-agent-8h3vn", "ns": NS, "command": list(argv),
                    "fn": "connect_get_namespaced_pod_exec"}


def test_run_agent_error_is_not_verified():
    def stream(fn, pod, ns, **kw):
        return FakeWS('{"error": "no inference worker process found on GPU 1"}\n', rc=1)

    c, _ = make_client({("GET", f"/api/v1/namespaces/{NS}/pods"): [(200, "pods_agent.json")]}, exec_stream=stream)
    with pytest.raises(FaultNotVerified, match="no inference worker"):
        c.run_agent("node-0", ("python3", "a.py", "inject", "sigstop", "--gpu", "1"), node_map={"node-0": "gpu-a-17"})


def test_agent_pod_missing_node():
    c, _ = make_client({("GET", f"/api/v1/namespaces/{NS}/pods"): [(200, "pods_agent.json")]})
    with pytest.raises(PreflightFailed, match="node-7"):
        c.agent_pod("node-7", node_map={"node-0": "gpu-a-17"})
