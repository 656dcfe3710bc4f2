"""Per-rank process metrics of the vLLM workers, one small /metrics endpoint per rank.

Real vLLM exports its ``vllm:*`` metrics once, from the API server; it has no per-worker view on
CPU. So that ``data.csv`` has ``rank-<i>`` columns as with the mini engine, the deploying process
serves, for each TP worker pid, what an operator's process exporter would show (read from /proc
through psutil at scrape time): CPU seconds, resident memory, threads and context switches.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

METRICS = (
    ("chaosbench_rank_cpu_seconds_total", "counter", "user+system CPU seconds of the rank's worker process"),
    ("chaosbench_rank_resident_memory_bytes", "gauge", "resident memory of the rank's worker process"),
    ("chaosbench_rank_threads", "gauge", "threads of the rank's worker process"),
    ("chaosbench_rank_voluntary_ctx_switches_total", "counter", "voluntary context switches (waits)"),
    ("chaosbench_rank_involuntary_ctx_switches_total", "counter", "involuntary context switches (preemptions)"),
)


def sample(pid: int) -> dict[str, float] | None:
    """The metric values of one process; None if it is gone."""
    import psutil

    try:
        p = psutil.Process(pid)
        with p.oneshot():
            cpu, mem, threads, ctx = p.cpu_times(), p.memory_info(), p.num_threads(), p.num_ctx_switches()
    except psutil.Error:
        return None
    values = (cpu.user + cpu.system, float(mem.rss), float(threads), float(ctx.voluntary), float(ctx.involuntary))
    return {name: v for (name, _, _), v in zip(METRICS, values, strict=True)}


def render(values: dict[str, float] | None) -> str:
    """Prometheus text format; an empty body (the target stays up) once the process is gone."""
    lines = []
    for name, kind, help_text in METRICS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        if values is not None:
            lines.append(f"{name} {values[name]:.6g}" if kind == "gauge" else f"{name} {values[name]:.3f}")
    return "\n".join(lines) + "\n"


class RankExporter:
    """One HTTP server per rank on ``host`` (ephemeral ports), serving until ``stop()``."""

    def __init__(self, pids: dict[str, int], host: str = "127.0.0.1"):
        self.pids = dict(pids)
        self.host = host
        self._servers: dict[str, ThreadingHTTPServer] = {}

    def start(self) -> RankExporter:
        for rank, pid in self.pids.items():
            server = _QuietServer((self.host, 0), _handler(pid))
            threading.Thread(target=server.serve_forever, name=f"rank-exporter-{rank}", daemon=True).start()
            self._servers[rank] = server
        return self

    def targets(self) -> list[tuple[str, str]]:
        return [(rank, f"{self.host}:{srv.server_address[1]}") for rank, srv in self._servers.items()]

    def stop(self) -> None:
        for srv in self._servers.values():
            srv.shutdown()
            srv.server_close()
        self._servers.clear()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a scrape cut short must not print a traceback into the run's output


def _handler(pid: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = render(sample(pid)).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # Prometheus gave up on a slow scrape (1 s timeout): it records the miss itself

        def log_message(self, *args: object) -> None:  # scrapes every second: keep stderr quiet
            pass

    return Handler
