"""Stand-ins for a Kubernetes cluster and its Prometheus, shared by the k8s backend tests.

No Kubernetes or GPU cluster can run where these tests run, so the backend's cluster calls go to
``FakeCluster`` (the ``K8sClient`` surface, with scripted state) and its PromQL to ``PrometheusStub``
(the Prometheus HTTP API over a real local socket). The k8s client's own API calls are tested
against recorded responses in test_client.py.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlparse

from chaosbench.backends.k8s.client import ExecResult, PodRef
from chaosbench.errors import PreflightFailed

NODE_MAP = {"node-0": "gpu-a-17", "node-1": "gpu-b-03"}
RUN = "cb-"  # every rendered RayService name starts with it


def gpu_uuid(node: str, slot: int) -> str:
    """The NVML UUID the stand-in cluster reports for ``slot`` (PCI bus order) of ``node``."""
    return f"GPU-{node}-{slot}"


class FakeCluster:
    """The K8sClient surface the backend uses, with a scripted cluster state.

    The fault agents' ``locate`` reports ``gpus_per_node`` vLLM workers per node (UUIDs from ``gpu_uuid``, listed
    in reverse PCI bus order so the mapping must sort them) and the engine on ``engine_node``; the head pod's
    ``python -c`` answers ``versions`` (Ray's and vLLM's)."""

    namespace = "chaosbench"

    def __init__(self, node_map=NODE_MAP, injected_after: int = 1, agent_verified: bool = True,
                 gpus_per_node: int = 2, engine_node: str = "node-0",
                 versions: dict[str, str] | None = None):
        self._node_map = dict(node_map)
        self.gpus_per_node = gpus_per_node
        self.engine_node = engine_node
        self.versions = versions or {"ray": "2.52.0", "vllm": "0.11.0"}
        self.calls: list[tuple] = []
        self.chaos: dict[str, dict] = {}
        self.polls = 0
        self.injected_after = injected_after
        self.agent_verified = agent_verified
        self.files: dict[str, str] = {}

    def node_map(self):
        return dict(self._node_map)

    def wait_rayservice_ready(self, name, timeout_s=0):
        self.calls.append(("wait_rayservice_ready", name))
        return {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}

    def agent_pod(self, node, node_map=None):
        if node not in (node_map or self._node_map):
            raise PreflightFailed(f"no running fault-agent pod on {node}")
        return f"agent-{node}"

    def run_agent(self, node, argv, node_map=None):
        self.calls.append(("agent", node, tuple(argv)))
        verb = argv[2]
        if verb == "locate":
            workers = [{"pid": 4000 + 10 * int(node.split("-")[1]) + i, "uuid": gpu_uuid(node, i), "index": 3 - i,
                        "bus_id": f"00000000:{0x18 + i:02X}:00.0"} for i in range(self.gpus_per_node)]
            return {"run": argv[-1], "workers": workers[::-1], "engines": int(node == self.engine_node)}
        if verb == "verify":
            return {"verified": self.agent_verified, "power_limit_w": 150.0}
        return {verb: argv[3]}

    def wait_pods_ready(self, selector, count, timeout_s=0):
        self.calls.append(("wait_pods_ready", selector))
        return [PodRef("cb-head-x7k2p", "gpu-a-17", "Running", True, {"chaosbench.io/role": "head"})][:count]

    def _worker_pods(self):
        part_of = {"app.kubernetes.io/part-of": "chaosbench"}
        return [PodRef(f"cb-{node}-workers-{i}q9z", k8s, "Running", True,
                       {**part_of, "chaosbench.io/role": "worker", "chaosbench.io/node": node}, f"10.42.{i}.7")
                for i, (node, k8s) in enumerate(sorted(self._node_map.items()))]

    def create_chaos(self, obj):
        self.calls.append(("create", obj["kind"], obj["metadata"]["name"]))
        self.chaos[obj["metadata"]["name"]] = obj

    def chaos_injected(self, obj):
        self.polls += 1
        return self.polls > self.injected_after

    def delete_chaos(self, obj):
        self.calls.append(("delete", obj["kind"], obj["metadata"]["name"]))
        return self.chaos.pop(obj["metadata"]["name"], None) is not None

    def pods(self, selector):
        if selector == "chaosbench.io/role=worker":
            return self._worker_pods()
        return [PodRef("cb-clean-locust-abcde", "gpu-a-17", "Running", True, {"job-name": "cb-clean-locust"})]

    def exec(self, pod, argv, container=None, timeout_s=120):
        self.calls.append(("exec", pod, tuple(argv)))
        cmd = argv[-1]
        if list(argv[:2]) == ["python", "-c"] and "vllm.__version__" in cmd:
            return ExecResult(json.dumps(self.versions) + "\n", "", 0)
        for name, text in self.files.items():
            if f"/out/{name} " in cmd + " ":
                return ExecResult(base64.b64encode(text.encode()).decode(), "", 0)
        return ExecResult("", "", 1)



class StandInCluster(FakeCluster):
    """A cluster for a whole run (tests/k8s/test_run_k8s.py): the RayService's head and worker pods, the
    Locust Job's pod and its /out files (they appear when the Job is applied and ``exit_code`` once the load
    has run its course), vLLM's profiler on the head and its trace files in the workers, pod logs.

    ``settings`` (K8sSettings) names the pods as KubeRay would; ``agent_error``: the fault agent answers
    ``{"error": ...}`` to that verb (e.g. "inject": nvidia-smi refused); the other arguments are FakeCluster's.
    """

    def __init__(self, settings, agent_error: str | None = None, **kw):
        super().__init__(**kw)
        self.settings = settings
        self.agent_error = agent_error
        self.name = settings.name
        self.profiler: list[str] = []  # "start" / "stop", in order
        self.locust_started_at: float | None = None
        self.locust_ends_at: float | None = None
        self.locust_stopped = 0
        part_of = {"app.kubernetes.io/part-of": "chaosbench"}
        self._head = PodRef(f"{self.name}-head-x7k2p", NODE_MAP["node-0"], "Running", True,
                            {**part_of, "chaosbench.io/role": "head"})
        # KubeRay truncates long names: the pods are found by their labels, never by a name pattern
        self._workers = [PodRef(f"{self.name[:20]}-{i}-wrk-{i}q9z", NODE_MAP[node], "Running", True,
                                {**part_of, "chaosbench.io/role": "worker", "chaosbench.io/node": node},
                                f"10.42.{i}.7")
                         for i, node in enumerate(settings.node_names)]
        self._locust = PodRef(f"{self.name}-locust-abcde", NODE_MAP["node-0"], "Running", True,
                              {"job-name": f"{self.name}-locust"})

    def run_agent(self, node, argv, node_map=None):
        if argv[2] == self.agent_error:
            from chaosbench.errors import FaultNotVerified

            self.calls.append(("agent", node, tuple(argv)))
            # what K8sClient.run_agent raises for an agent's {"error": ...} answer
            raise FaultNotVerified(f"fault agent on {node}: {' '.join(argv[2:])}: Insufficient Permissions")
        return super().run_agent(node, argv, node_map)

    # -- the Locust Job ------------------------------------------------------------------------------------
    def start_locust(self, duration_s: float, qps: float = 4.0) -> None:
        """What applying the Job does: Locust starts now, writes its records and exits after ``duration_s``."""
        t0 = time.time()
        self.locust_started_at, self.locust_ends_at = t0, t0 + duration_s
        n = max(1, int(duration_s * qps))
        records = [{"start": t0 + i / qps, "ttft": 0.08, "itl": [0.02] * 7, "e2e": 0.3, "tokens": 8,
                    "status": "ok", "code": 200, "error": None, "prompt_tokens": 48} for i in range(n)]
        self.files = {"started.json": json.dumps({"started_at": t0}),
                      "requests.jsonl": "".join(json.dumps(r) + "\n" for r in records),
                      "exit_code": "0\n", "locust.log": "All users spawned\n",
                      "locust_stats.csv": f"Type,Name,Request Count\nPOST,/v1/completions,{n}\n"}

    # -- pods ----------------------------------------------------------------------------------------------
    def pods(self, selector):
        if selector.startswith("job-name="):
            return [self._locust] if self.locust_started_at and selector == f"job-name={self.name}-locust" else []
        if selector == "chaosbench.io/role=head":
            return [self._head]
        if selector == "chaosbench.io/role=worker":
            return list(self._workers)
        if selector == "app.kubernetes.io/part-of=chaosbench":
            return [self._head, *self._workers]
        return []

    def wait_pods_ready(self, selector, count, timeout_s=0):
        self.calls.append(("wait_pods_ready", selector))
        return self.pods(selector)[:count]

    def _traces_of(self, pod: str) -> dict[str, bytes]:
        """The profiler's files in a worker pod: one Chrome trace per rank on that node, after a stop."""
        if "stop" not in self.profiler:
            return {}
        node = next(p.labels["chaosbench.io/node"] for p in self._workers if p.name == pod)
        s = self.settings
        out = {}
        for r in range(s.world_size):
            if s.rank_node(r) == node:
                events = [{"name": "execute_model", "ph": "X", "ts": 1000 * k, "dur": 800, "pid": r, "tid": 1,
                           "cat": "cpu_op"} for k in range(3)]
                out[f"{self.name}-rank-{r}.1700000000.pt.trace.json"] = json.dumps({"traceEvents": events}).encode()
        return out

    def exec(self, pod, argv, container=None, timeout_s=120):
        self.calls.append(("exec", pod, tuple(argv)))
        cmd = argv[-1]
        if pod == self._head.name and list(argv[:2]) == ["python", "-c"]:
            return ExecResult(json.dumps(self.versions) + "\n", "", 0)
        if pod == self._head.name and "profile_window.py" in " ".join(argv):
            self.profiler.append(argv[-1])
            return ExecResult(json.dumps({"action": argv[-1], "replicas": 1}) + "\n", "", 0)
        if pod in {w.name for w in self._workers}:
            traces = self._traces_of(pod)
            if cmd.startswith("ls -1"):
                return ExecResult("\n".join(sorted(traces)) + "\n", "", 0)
            name = cmd.rsplit("/", 1)[-1]
            if cmd.startswith("base64") and name in traces:
                return ExecResult(base64.b64encode(traces[name]).decode(), "", 0)
            return ExecResult("", f"no such file {name}", 1)
        if pod == self._locust.name:
            if "kill -TERM" in cmd:
                self.locust_stopped += 1
                return ExecResult("", "", 0)
            if "/out/exit_code " in cmd + " " and time.time() < (self.locust_ends_at or 0):
                return ExecResult("", "", 1)  # still running
            return super().exec(pod, argv, container, timeout_s)
        raise PreflightFailed(f"exec in {pod}: 404 Not Found")

    def logs(self, pod, since_seconds=None, container=None):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1)) + ".000000000Z"
        if pod == self._head.name:
            return f"{stamp} INFO serve started\n"
        return f"{stamp} RuntimeError: NCCL watchdog timeout on {pod}\n"


class PrometheusStub:
    """The Prometheus HTTP API (``/api/v1/query``, ``/api/v1/query_range``) on a local port, answering like a
    healthy cluster's Prometheus: every series the k8s backend scrapes exists with value 1, so

    - a query over the names the cluster has (``ray_vllm_*`` from Ray's metrics agent, ``DCGM_*``,
      ``container_*``, ``node_*``) gets one series;
    - a query on a name the cluster does not have (vLLM's own ``vllm:*``, or ``ray_vllm:*``: under Ray Serve
      LLM vLLM's ``:`` becomes ``_``) gets an empty result, as the real one would;
    - a query with a placeholder left in it (``{worker_pods}``, ``{gpu_uuid}``, ``{k8s_node}``) is refused as
      Prometheus refuses a malformed selector;
    - a filtering comparison (``== 0``, ``> 0`` ...) holds for nothing: an empty result (no stop condition).

    Every query is kept in ``queries`` as (path, query).
    """

    KNOWN = re.compile(r"\b(ray_vllm_\w+|DCGM_\w+|container_\w+|node_\w+)")
    FOREIGN = re.compile(r"vllm:")
    PLACEHOLDER = re.compile(r"\{(worker_pods|gpu_uuid|k8s_node)(:[^}]*)?\}")
    COMPARISON = re.compile(r"==|!=|>=|<=|(?<![=!<>])[<>](?![=~])")

    def __init__(self) -> None:
        self.queries: list[tuple[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self) -> None:
                url = urlparse(self.path)
                params = parse_qs(url.query)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    params.update(parse_qs(self.rfile.read(length).decode()))
                body = stub.answer(url.path, {k: v[0] for k, v in params.items()})
                data = json.dumps(body).encode()
                self.send_response(200 if body["status"] == "success" else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def has_data(self, query: str) -> bool:
        operators = re.sub(r"\{[^}]*\}", "", query)  # label matchers (!=, =~) are not comparisons
        return bool(self.KNOWN.search(query)) and not self.FOREIGN.search(query) \
            and not self.COMPARISON.search(operators)

    def answer(self, path: str, params: dict[str, str]) -> dict:
        query = params.get("query", "")
        self.queries.append((path, query))
        if self.PLACEHOLDER.search(query):
            return {"status": "error", "errorType": "bad_data", "error": f"parse error in {query}"}
        if path == "/api/v1/query":
            result = [{"metric": {}, "value": [time.time(), "1"]}] if self.has_data(query) else []
            return {"status": "success", "data": {"resultType": "vector", "result": result}}
        if path == "/api/v1/query_range":
            start, end, step = float(params["start"]), float(params["end"]), float(params["step"].rstrip("s"))
            values, t = [], start
            while t <= end:
                values.append([t, "1"])
                t += step
            result = [{"metric": {}, "values": values}] if self.has_data(query) else []
            return {"status": "success", "data": {"resultType": "matrix", "result": result}}
        return {"status": "error", "errorType": "bad_data", "error": f"unknown endpoint {path}"}

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
