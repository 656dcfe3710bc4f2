"""Per-node counters for Prometheus: each emulated node's cgroup and veth.

node-exporter sees the whole machine; this small exporter (its own process,
started by the deploy playbook) reads each node's cgroups and its veth, so
node-level columns differ per node. Metrics (label ``component="node-<i>"``):

    chaosbench_node_cpu_usage_seconds_total         cgroup CPU time
    chaosbench_node_cpu_periods_total               CFS periods
    chaosbench_node_cpu_throttled_periods_total     CFS periods throttled by a quota
    chaosbench_node_cpu_throttled_seconds_total     time throttled
    chaosbench_node_memory_usage_bytes              cgroup memory usage
    chaosbench_node_memory_failcnt_total            hits of the memory limit (v1) / max events (v2)
    chaosbench_node_memory_major_faults_total       major page faults of the node's processes
    chaosbench_node_memory_pressure_seconds_total   time stalled on memory (v2 PSI; absent on v1)
    chaosbench_node_network_{receive,transmit}_{bytes,packets,drop}_total   the node's veth, node's view
    chaosbench_node_processes                       processes in the node's cgroup

Usage: ``python -m chaosbench.backends.local.exporter --state RUN/testbed.json --listen 127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from chaosbench.backends.local.plan import NodePlan, TestbedPlan, read_plan

Sample = tuple[str, str, float]  # metric, type, value


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _kv(text: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


def _psi_total_seconds(text: str | None) -> float | None:
    for line in (text or "").splitlines():
        if line.startswith("some"):
            fields = dict(f.split("=", 1) for f in line.split()[1:])
            return float(fields.get("total", 0)) / 1e6
    return None


def cgroup_samples(node: NodePlan, version: int) -> Iterator[Sample]:
    if version == 1:
        cpu, acct, mem = (Path(node.cgroups[c]) for c in ("cpu", "cpuacct", "memory"))
        usage = _read(acct / "cpuacct.usage")
        if usage is not None:
            yield "chaosbench_node_cpu_usage_seconds_total", "counter", float(usage) / 1e9
        stat = _kv(_read(cpu / "cpu.stat"))
        throttled_s = stat.get("throttled_time", 0.0) / 1e9
        mem_usage, failcnt = _read(mem / "memory.usage_in_bytes"), _read(mem / "memory.failcnt")
        procs = _read(cpu / "cgroup.procs")
        mstat = _kv(_read(mem / "memory.stat"))
        faults = mstat.get("total_pgmajfault", mstat.get("pgmajfault"))
        psi = None
    else:
        d = Path(node.cgroups["cpu"])
        stat = _kv(_read(d / "cpu.stat"))
        if "usage_usec" in stat:
            yield "chaosbench_node_cpu_usage_seconds_total", "counter", stat["usage_usec"] / 1e6
        throttled_s = stat.get("throttled_usec", 0.0) / 1e6
        mem_usage, procs = _read(d / "memory.current"), _read(d / "cgroup.procs")
        failcnt = str(_kv(_read(d / "memory.events")).get("max", 0))
        faults = _kv(_read(d / "memory.stat")).get("pgmajfault")
        psi = _psi_total_seconds(_read(d / "memory.pressure"))
    yield "chaosbench_node_cpu_periods_total", "counter", stat.get("nr_periods", 0.0)
    yield "chaosbench_node_cpu_throttled_periods_total", "counter", stat.get("nr_throttled", 0.0)
    yield "chaosbench_node_cpu_throttled_seconds_total", "counter", throttled_s
    if mem_usage is not None:
        yield "chaosbench_node_memory_usage_bytes", "gauge", float(mem_usage)
    if failcnt is not None:
        yield "chaosbench_node_memory_failcnt_total", "counter", float(failcnt)
    if faults is not None:
        yield "chaosbench_node_memory_major_faults_total", "counter", faults
    if psi is not None:
        yield "chaosbench_node_memory_pressure_seconds_total", "counter", psi
    if procs is not None:
        yield "chaosbench_node_processes", "gauge", float(len(procs.split()))


# The host-side veth's rx is what the node sent: report from the node's point of view.
_NET = {"rx_bytes": "transmit_bytes", "tx_bytes": "receive_bytes", "rx_packets": "transmit_packets",
        "tx_packets": "receive_packets", "rx_dropped": "transmit_drop", "tx_dropped": "receive_drop"}


def veth_samples(node: NodePlan) -> Iterator[Sample]:
    if not node.veth_host:
        return
    stats = Path("/sys/class/net") / node.veth_host / "statistics"
    for src, name in _NET.items():
        value = _read(stats / src)
        if value is not None:
            yield f"chaosbench_node_network_{name}_total", "counter", float(value)


def render(plan: TestbedPlan) -> str:
    by_metric: dict[str, tuple[str, list[str]]] = {}
    for node in plan.nodes:
        samples = list(veth_samples(node))
        if node.cgroups and plan.cgroup_version:
            samples += list(cgroup_samples(node, plan.cgroup_version))
        for metric, kind, value in samples:
            by_metric.setdefault(metric, (kind, []))[1].append(f'{metric}{{component="{node.name}"}} {value!r}')
    lines: list[str] = []
    for metric, (kind, rows) in sorted(by_metric.items()):
        lines += [f"# TYPE {metric} {kind}", *rows]
    return "\n".join(lines) + "\n"


def serve(plan: TestbedPlan, host: str, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            body = render(plan).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer((host, port), Handler).serve_forever()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", required=True, type=Path)
    ap.add_argument("--listen", default="127.0.0.1:9392")
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    serve(read_plan(args.state), host, int(port))


if __name__ == "__main__":
    main()
