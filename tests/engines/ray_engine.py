"""The mini engine on a real local Ray of its own, for the slow end-to-end tests (test_engine_e2e.py for the
tensor-parallel layout, test_engine_layouts_e2e.py for replicas and stages)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil

REPO = Path(__file__).resolve().parents[2]


def scenario(nodes: int = 1, tensor_parallel: int = 2, data_parallel: int = 1, pipeline_parallel: int = 1):
    model = SimpleNamespace(name="mini-llama", layers=2, hidden=128, heads=4, vocab=512, max_seq_len=256)
    topo = SimpleNamespace(nodes=nodes, tensor_parallel=tensor_parallel, data_parallel=data_parallel,
                           pipeline_parallel=pipeline_parallel)
    return SimpleNamespace(spec=SimpleNamespace(deployment=SimpleNamespace(topology=topo, model=model),
                                                workload=SimpleNamespace(seed=3)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(ray, deploy, tmp: Path, scen):
    """Ray + the engine; one retry: other Ray clusters on this machine can take a port Ray picked."""
    nodes = [f"node-{i}" for i in range(scen.spec.deployment.topology.nodes)]
    for attempt in (1, 2):
        try:
            ray.init(address="local", include_dashboard=False, _temp_dir=str(tmp / f"ray{attempt}"), num_cpus=2,
                     resources={n: 1000 for n in nodes}, log_to_driver=False)
            return deploy("local", scen, tmp / "run", trace_dir=tmp / "traces", control_dir=tmp / "ctl",
                          node_ips={n: "127.0.0.1" for n in nodes}, http_host="127.0.0.1", http_port=free_port(),
                          gloo_ifname=None, kv_blocks=32)
        except Exception as exc:
            if attempt == 2:
                raise
            print(f"engine start failed, retrying once: {type(exc).__name__}: {exc}")
            if ray.is_initialized():
                from ray import serve

                serve.shutdown()
                ray.shutdown()
    raise AssertionError("unreachable")


@contextmanager
def running_engine(scen) -> Iterator[SimpleNamespace]:
    """The engine of ``scen`` deployed on a new local Ray (handle, tmp, before: our child PIDs before, ray)."""
    import ray

    from chaosbench.engines.mini import deploy

    tmp = Path(tempfile.mkdtemp(prefix="cbeng-", dir="/tmp"))
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED", "PYTHONPATH")}
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
                      PYTHONPATH=os.pathsep.join(p for p in (str(REPO), saved["PYTHONPATH"]) if p))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    try:
        yield SimpleNamespace(handle=_start(ray, deploy, tmp, scen), tmp=tmp, before=before, ray=ray)
    finally:
        if ray.is_initialized():
            from ray import serve

            serve.shutdown()
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def metrics(engine: SimpleNamespace, component: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    target = dict(engine.handle.metrics_targets)[component]
    text = httpx.get(f"http://{target}/metrics", timeout=10).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def complete(engine: SimpleNamespace, max_tokens: int = 12, **kw) -> httpx.Response:
    body = {"prompt": "hello chaos", "max_tokens": max_tokens, "ignore_eos": True, **kw}
    return httpx.post(f"{engine.handle.api_url}/v1/completions", json=body, timeout=120)
