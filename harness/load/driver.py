"""Start the Locust load (harness/load/locustfile.py) as a subprocess and wait for it.

The Locust process writes ``<out>/requests.jsonl`` (one record per request),
``<out>/locust_*.csv`` and ``<out>/started.json`` (the unix time the load began).
``LoadRun.finish()`` waits for the end (or stops it), then writes
``<out>/summary.json`` (harness/load/summary.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chaosbench.case import atomic_write_json
from chaosbench.errors import PreflightFailed
from chaosbench.load.summary import read_requests, summarize

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass(frozen=True)
class LoadConfig:
    api_url: str
    model: str
    users: int
    spawn_rate: float
    arrival: str
    qps: float
    prompt_tokens: int
    output_tokens: int
    streaming: bool
    duration: float
    seed: int
    max_requests: int
    slo: dict[str, float]  # ttft, tpot, e2e seconds

    @classmethod
    def from_scenario(cls, scenario: Any, api_url: str, seed: int | None = None) -> LoadConfig:
        w = scenario.spec.workload
        return cls(api_url=api_url, model=scenario.spec.deployment.model.name, users=w.users,
                   spawn_rate=w.spawn_rate, arrival=w.arrival, qps=w.qps, prompt_tokens=w.prompt_tokens,
                   output_tokens=w.output_tokens, streaming=w.streaming, duration=w.duration,
                   seed=w.seed if seed is None else seed, max_requests=w.max_requests,
                   slo={"ttft": w.slo.ttft, "tpot": w.slo.tpot, "e2e": w.slo.e2e})


class LoadRun:
    def __init__(self, config: LoadConfig, out_dir: Path, proc: subprocess.Popen[bytes]):
        self.config, self.out_dir, self.proc = config, out_dir, proc
        self.started_at: float | None = None

    def wait_started(self, timeout_s: float = 60.0) -> float:
        """Unix time the load began (Locust's test_start)."""
        marker = self.out_dir / "started.json"
        deadline = time.monotonic() + timeout_s
        while not marker.is_file():
            if self.proc.poll() is not None:
                raise PreflightFailed(f"Locust exited with {self.proc.returncode} before starting: "
                                      f"{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise PreflightFailed(f"Locust did not start within {timeout_s:g}s: {self._log_tail()}")
            time.sleep(0.1)
        self.started_at = float(json.loads(marker.read_text())["started_at"])
        return self.started_at

    def _log_tail(self) -> str:
        log = self.out_dir / "locust.log"
        lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
        return lines[-1] if lines else "no output"

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM (Locust then writes its CSVs), SIGKILL after ``grace_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def finish(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for the load to end (stopping it after ``timeout_s``), then write and return summary.json."""
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
        records = read_requests(self.out_dir / "requests.jsonl")
        summary = summarize(records, self.config.slo, self.started_at)
        atomic_write_json(self.out_dir / "summary.json", summary)
        return summary


def start_load(config: LoadConfig, out_dir: Path) -> LoadRun:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "requests.jsonl").touch()
    cfg_path = out_dir / "load-config.json"
    atomic_write_json(cfg_path, {**asdict(config), "requests_path": str(out_dir / "requests.jsonl"),
                                 "started_path": str(out_dir / "started.json")})
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
           "-u", str(config.users), "-r", str(config.spawn_rate), "-t", f"{max(1, round(config.duration))}s",
           "--host", config.api_url.rstrip("/"), "--csv", str(out_dir / "locust"), "--exit-code-on-error", "0",
           "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "10"]
    env = {**os.environ, "CHAOSBENCH_LOAD_CONFIG": str(cfg_path), "PYTHONUNBUFFERED": "1"}
    log = open(out_dir / "locust.log", "wb")
    # own session: a Ctrl-C in the terminal reaches the runner, which stops Locust itself
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log.close()
    return LoadRun(config, out_dir, proc)
