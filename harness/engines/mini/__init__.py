"""The ``mini`` engine: a small tensor-parallel transformer served behind Ray Serve.

Layouts: ``data_parallel`` replicas x ``pipeline_parallel`` stages x ``tensor_parallel`` ranks (layout.py; at
most 8 ranks locally). Each replica is one Serve replica with its own engine core and rank block; global rank
``r = (d * pp + p) * tp + t``. With data_parallel > 1 ``metrics_targets`` names each replica's engine exporter
``replica-<d>`` instead of ``ingress``; every rank's series carry ``replica``/``stage`` labels and its traces
its place (profiling.py) whenever data_parallel or pipeline_parallel exceeds 1.

``deploy(...)`` starts it on a running Ray cluster whose nodes carry the custom resources
``node-0``, ``node-1``, ... (``ray start --resources '{"node-0": 1000}'``); rank r goes to
``topology.rank_node(r)``, the Serve ingress and the engine core to node-0. Ray workers must be
able to import ``chaosbench`` (start Ray with the Python that has it installed).
The HTTP proxy binds ``http_host:http_port``: the head node's IP (HeadOnly proxy) or 0.0.0.0.

What it gives the rest of the testbed:
- ``EngineHandle.api_url``: OpenAI-compatible API (/v1/completions, /v1/chat/completions, /v1/models,
  /health, /start_profile, /stop_profile, /ranks, /metrics).
- ``EngineHandle.metrics_targets``: ``("ingress", ip:port)`` serves the vllm:* metrics; ``("rank-N",
  ip:port)`` the rank's emulated device (DCGM_* names, labels gpu/rank/emulated="true") and its
  ``chaosbench_rank_{step,allreduce}_seconds`` histograms and ``chaosbench_rank_restarts_total``.
  Exporters bind the node's IP from ``node_ips`` (0.0.0.0 when absent); ports are ephemeral unless
  ``metrics_port=N`` (ingress N, rank i N+1+i), and a restarted rank keeps its port.
- Device control: ``<control_dir>/rank-N.json`` (chaosbench.backends.base.DeviceControl), polled each step.
- Logs: ``<run_dir>/logs/engine.jsonl`` (time, component, level, message), e.g. the emulated
  ``NVRM: Xid (PCI:0000:0N:00): 79, ...`` line of a failed rank and its restart.
- Traces: each /start_profile../stop_profile window is merged into ``<trace_dir>/rank-<i>.json.gz``
  (Kineto Chrome JSON, ts in unix-epoch microseconds, process_name ``rank-<i>``, args.step on
  every event inside an ``engine.step``; windows listed under ``chaosbench.windows``).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaosbench.errors import PreflightFailed

APP_NAME = "mini"
__all__ = ["EngineHandle", "deploy"]


@dataclass(frozen=True)
class EngineHandle:
    api_url: str
    metrics_targets: list[tuple[str, str]]
    _handle: Any = field(default=None, repr=False, compare=False)
    _owns_ray: bool = field(default=False, repr=False, compare=False)

    def rank_pids(self) -> dict[str, int]:
        """Current OS pid of every rank worker (they change when a rank is restarted)."""
        import httpx

        resp = httpx.get(f"{self.api_url}/ranks", timeout=10.0)
        resp.raise_for_status()
        return {r["rank"]: int(r["pid"]) for r in resp.json()}

    def shutdown(self) -> None:
        """Kill the ranks, shut Serve down; disconnect from Ray if deploy connected."""
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        if self._handle is not None:
            try:
                self._handle.shutdown.remote().result(timeout_s=60)
            except Exception:  # noqa: BLE001 - the app may already be gone; serve.shutdown still runs
                pass
        serve.shutdown()
        if self._owns_ray:
            ray.shutdown()


def deploy(ray_address: str, scenario: Any, run_dir: Path, *, trace_dir: Path, control_dir: Path,
           node_ips: dict[str, str], http_host: str, http_port: int, gloo_ifname: str | None,
           metrics_port: int = 0, kv_blocks: int | None = None, trace_ops: bool = False) -> EngineHandle:
    """Start the mini engine on the Ray cluster at ``ray_address`` and wait until it serves.

    ``metrics_port``: 0 picks ephemeral exporter ports; N puts the ingress on N and rank i on N+1+i.
    ``trace_ops``: traces also hold every aten:: op (default: only the role ranges, much cheaper).
    """
    import ray
    from ray import serve

    from chaosbench.engines.mini.config import engine_config
    from chaosbench.engines.mini.core import replicas_dir
    from chaosbench.engines.mini.server import MiniServer

    overrides: dict[str, Any] = {"metrics_port": metrics_port, "trace_ops": trace_ops}
    if kv_blocks is not None:
        overrides["kv_blocks"] = kv_blocks
    cfg = engine_config(scenario, run_dir=Path(run_dir), trace_dir=Path(trace_dir), control_dir=Path(control_dir),
                        node_ips=node_ips, gloo_ifname=gloo_ifname, **overrides)
    owns_ray = not ray.is_initialized()
    if owns_ray:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address=ray_address, log_to_driver=False)
    _check_resources(cfg.nodes, ray.cluster_resources())
    Path(trace_dir).mkdir(parents=True, exist_ok=True)
    Path(control_dir).mkdir(parents=True, exist_ok=True)
    location = "EveryNode" if http_host == "0.0.0.0" else "HeadOnly"
    serve.start(proxy_location=location, http_options={"host": http_host, "port": http_port})
    if cfg.data_parallel > 1:
        shutil.rmtree(replicas_dir(cfg.run_dir), ignore_errors=True)  # a previous deploy's replicas
        app = MiniServer.options(num_replicas=cfg.data_parallel).bind(cfg)
    else:
        app = MiniServer.bind(cfg)
    handle = serve.run(app, name=APP_NAME, route_prefix="/")
    targets = _targets(handle, cfg.data_parallel)
    host = node_ips.get("node-0", "127.0.0.1") if http_host == "0.0.0.0" else http_host
    api_url = f"http://{host}:{http_port}"
    _wait_healthy(api_url)
    return EngineHandle(api_url=api_url, metrics_targets=targets, _handle=handle, _owns_ray=owns_ray)


def _targets(handle: Any, replicas: int, timeout_s: float = 60.0) -> list[tuple[str, str]]:
    """The exporters; with replicas, wait until every replica has published its own (``replica-<d>``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        targets = [tuple(t) for t in handle.metrics_targets.remote().result(timeout_s=60)]
        if replicas == 1 or sum(c.startswith("replica-") for c, _ in targets) == replicas:
            return targets  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise PreflightFailed(f"only {sum(c.startswith('replica-') for c, _ in targets)} of {replicas} mini "
                                  f"replicas published their exporters after {timeout_s:.0f}s")
        time.sleep(0.5)


def _check_resources(nodes: int, resources: dict[str, float]) -> None:
    missing = [f"node-{i}" for i in range(nodes) if resources.get(f"node-{i}", 0) <= 0]
    if missing:
        raise PreflightFailed(f"the Ray cluster has no custom resource for {', '.join(missing)}: start each Ray "
                              f"node with --resources '{{\"node-<i>\": 1000}}'")


def _wait_healthy(api_url: str, timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"{api_url}/health", timeout=5.0)
            if resp.status_code == 200:
                return
            last = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise PreflightFailed(f"mini engine at {api_url} not healthy after {timeout_s:.0f}s ({last})")
