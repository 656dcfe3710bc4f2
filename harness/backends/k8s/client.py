"""The harness's Kubernetes calls (the ``kubernetes`` Python client): waits, status, logs, exec, custom objects.

Every call goes through one ``kubernetes.client.ApiClient``, so tests hand in an
ApiClient whose REST layer replays recorded API responses, and an ``exec_stream``
stand-in for the websocket exec channel. API errors become harness errors with one
line (PreflightFailed: the cluster is not in the state a run needs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chaosbench.backends.k8s.settings import NODE_LABEL
from chaosbench.errors import FaultNotVerified, PreflightFailed

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

AGENT_SELECTOR = "app.kubernetes.io/name=chaosbench-fault-agent"
CHAOS_GROUP, CHAOS_VERSION = "chaos-mesh.org", "v1alpha1"
PLURALS = {"StressChaos": "stresschaos", "NetworkChaos": "networkchaos", "RayService": "rayservices"}


@dataclass(frozen=True)
class PodRef:
    name: str
    node: str | None
    phase: str
    ready: bool
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = ""  # pod IP: Ray's node IP, which vLLM orders ranks by


@dataclass(frozen=True)
class ExecResult:
    stdout: str
    stderr: str
    rc: int


def _conditions_true(status: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and str(c.get("status")) == "True" for c in status.get("conditions") or [])


class K8sClient:
    def __init__(self, namespace: str, api_client: ApiClient | None = None, kubeconfig: str | None = None,
                 exec_stream: Callable[..., Any] | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_kube_config(config_file=kubeconfig)
            except Exception as exc:  # noqa: BLE001 - the client raises several types for a bad kubeconfig
                raise PreflightFailed(f"cannot load kubeconfig {kubeconfig or '(default)'}: {exc}") from exc
            api_client = client.ApiClient()
        self.namespace = namespace
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._exec_stream = exec_stream
        self._sleep, self._clock = sleep, clock

    # ------------------------------------------------------------------ reads

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise PreflightFailed(f"{what}: {exc.status} {exc.reason}") from exc

    def node_map(self) -> dict[str, str]:
        """chaosbench node (node-<i>) -> Kubernetes node name, from the node label."""
        nodes = self._call("list nodes", self.core.list_node, label_selector=NODE_LABEL)
        return {n.metadata.labels[NODE_LABEL]: n.metadata.name for n in nodes.items}

    def pods(self, selector: str) -> list[PodRef]:
        pods = self._call(f"list pods {selector}", self.core.list_namespaced_pod, self.namespace,
                          label_selector=selector)
        out = []
        for p in pods.items:
            statuses = p.status.container_statuses or []
            ready = bool(statuses) and all(c.ready for c in statuses)
            out.append(PodRef(p.metadata.name, p.spec.node_name, p.status.phase or "Unknown", ready,
                              dict(p.metadata.labels or {}), p.status.pod_ip or ""))
        return sorted(out, key=lambda r: r.name)

    def logs(self, pod: str, since_seconds: int | None = None, container: str | None = None) -> str:
        return self._call(f"logs of {pod}", self.core.read_namespaced_pod_log, pod, self.namespace,
                          container=container, since_seconds=since_seconds, timestamps=True)

    def rayservice(self, name: str) -> dict[str, Any]:
        return self._call(f"RayService {name}", self.custom.get_namespaced_custom_object, "ray.io", "v1",
                          self.namespace, "rayservices", name)

    @staticmethod
    def rayservice_ready(obj: dict[str, Any]) -> bool:
        """KubeRay >= 1.3 sets a Ready condition; older versions say serviceStatus Running."""
        status = obj.get("status") or {}
        return _conditions_true(status, "Ready") or status.get("serviceStatus") == "Running"

    def agent_pod(self, node: str, node_map: dict[str, str] | None = None) -> str:
        """Name of the fault-agent pod on chaosbench node ``node``."""
        k8s_node = (node_map or self.node_map()).get(node)
        if k8s_node is None:
            raise PreflightFailed(f"no Kubernetes node is labelled {NODE_LABEL}={node}")
        for pod in self.pods(AGENT_SELECTOR):
            if pod.node == k8s_node and pod.phase == "Running":
                return pod.name
        raise PreflightFailed(f"no running fault-agent pod on {node} ({k8s_node})")

    # ------------------------------------------------------------------ waits

    def wait(self, what: str, check: Callable[[], bool], timeout_s: float, poll_s: float = 5.0) -> None:
        deadline = self._clock() + timeout_s
        while not check():
            if self._clock() >= deadline:
                raise PreflightFailed(f"{what}: not ready after {timeout_s:g}s")
            self._sleep(poll_s)

    def wait_rayservice_ready(self, name: str, timeout_s: float = 1800) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def ready() -> bool:
            last.update(self.rayservice(name))
            return self.rayservice_ready(last)

        self.wait(f"RayService {name}", ready, timeout_s)
        return last

    def wait_pods_ready(self, selector: str, count: int, timeout_s: float = 600) -> list[PodRef]:
        found: list[PodRef] = []

        def ready() -> bool:
            found[:] = [p for p in self.pods(selector) if p.ready]
            return len(found) >= count

        self.wait(f"{count} ready pod(s) {selector}", ready, timeout_s)
        return found

    # ------------------------------------------------------------------ exec

    def exec(self, pod: str, argv: list[str] | tuple[str, ...], container: str | None = None,
             timeout_s: float = 120) -> ExecResult:
        """Run ``argv`` in ``pod`` through the exec API; stdout, stderr and the exit code."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream as k8s_stream

        stream = self._exec_stream or k8s_stream
        try:
            ws = stream(self.core.connect_get_namespaced_pod_exec, pod, self.namespace, command=list(argv),
                        container=container, stderr=True, stdin=False, stdout=True, tty=False,
                        _preload_content=False)
        except ApiException as exc:
            raise PreflightFailed(f"exec in {pod}: {exc.status} {exc.reason}") from exc
        try:
            ws.run_forever(timeout=timeout_s)
            rc = ws.returncode
            return ExecResult(ws.read_stdout() or "", ws.read_stderr() or "", -1 if rc is None else int(rc))
        finally:
            ws.close()

    def run_agent(self, node: str, argv: tuple[str, ...], node_map: dict[str, str] | None = None) -> dict[str, Any]:
        """Run a fault-agent command on ``node``; its JSON answer. An agent error raises FaultNotVerified."""
        pod = self.agent_pod(node, node_map)
        res = self.exec(pod, argv)
        try:
            answer = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {}
        except json.JSONDecodeError:
            answer = {}
        if res.rc != 0 or "error" in answer or not answer:
            detail = answer.get("error") or res.stderr.strip() or res.stdout.strip() or f"exit {res.rc}"
            raise FaultNotVerified(f"fault agent on {node}: {' '.join(argv[2:])}: {detail}")
        return answer

    # ------------------------------------------------------------------ Chaos Mesh objects

    def _chaos_args(self, obj: dict[str, Any]) -> tuple[str, str, str, str]:
        return CHAOS_GROUP, CHAOS_VERSION, obj["metadata"].get("namespace", self.namespace), PLURALS[obj["kind"]]

    def create_chaos(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create a Chaos Mesh object; an existing one of the same name is replaced (a re-run)."""
        from kubernetes.client.exceptions import ApiException

        group, version, ns, plural = self._chaos_args(obj)
        try:
            return self.custom.create_namespaced_custom_object(group, version, ns, plural, obj)
        except ApiException as exc:
            if exc.status != 409:
                raise PreflightFailed(f"create {obj['kind']}/{obj['metadata']['name']}: {exc.status} {exc.reason}") \
                    from exc
        self.delete_chaos(obj)
        return self._call(f"create {obj['kind']}", self.custom.create_namespaced_custom_object,
                          group, version, ns, plural, obj)

    def chaos_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        group, version, ns, plural = self._chaos_args(obj)
        got = self._call(f"{obj['kind']}/{obj['metadata']['name']}", self.custom.get_namespaced_custom_object,
                         group, version, ns, plural, obj["metadata"]["name"])
        return got.get("status") or {}

    def chaos_injected(self, obj: dict[str, Any]) -> bool:
        return _conditions_true(self.chaos_status(obj), "AllInjected")

    def delete_chaos(self, obj: dict[str, Any]) -> bool:
        """Delete (Chaos Mesh recovers on delete); False if it was already gone."""
        from kubernetes.client.exceptions import ApiException

        group, version, ns, plural = self._chaos_args(obj)
        try:
            self.custom.delete_namespaced_custom_object(group, version, ns, plural, obj["metadata"]["name"])
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise PreflightFailed(f"delete {obj['kind']}/{obj['metadata']['name']}: {exc.status} {exc.reason}") \
                from exc
        return True
