"""The recovery gate between two cases on one testbed: residue of the previous case's faults, then serving health."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from chaosbench import gate
from chaosbench.backends.local import residue
from chaosbench.faults.mech import procs


class _Engine(BaseHTTPRequestHandler):
    delay_s = 0.0
    failing_until = 0.0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(type(self).delay_s)
        code = 503 if time.time() < type(self).failing_until else 200
        body = json.dumps({"choices": [{"text": "ok"}]}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def engine():
    handler = type("Engine", (_Engine,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _bed(url: str, left: list[str] | None = None):
    return SimpleNamespace(api_url=url, fault_residue=lambda case_id: list(left or []))


def test_a_healthy_engine_passes(engine):
    handler, url = engine
    reference = gate.baseline(url, "m")
    assert reference.error is None and len(reference.latencies_s) == gate.PROBE_REQUESTS
    why, detail = gate.recovery_gate(_bed(url), "m", reference, "prev")
    assert why is None and detail["median_s"] >= 0


def test_residue_fails_the_gate_before_any_probe(engine):
    handler, url = engine
    why, detail = gate.recovery_gate(_bed(url, ["fault process 123 still running"]), "m", gate.baseline(url, "m"),
                                     "prev")
    assert why.startswith("fault residue: fault process 123") and detail["residue"]


def test_an_engine_that_serves_again_passes_and_one_that_does_not_fails(engine):
    handler, url = engine
    reference = gate.baseline(url, "m")
    handler.failing_until = time.time() + 1.5  # a restarted rank: serves again after a while
    t = time.monotonic()
    why, _ = gate.recovery_gate(_bed(url), "m", reference, "prev", timeout_s=20)
    assert why is None and time.monotonic() - t >= 1.0
    handler.failing_until = time.time() + 60
    why, _ = gate.recovery_gate(_bed(url), "m", reference, "prev", timeout_s=1.5)
    assert why is not None and "not healthy after 1.5s" in why and "503" in why


def test_a_slow_engine_fails_the_gate(engine):
    handler, url = engine
    reference = gate.baseline(url, "m")
    handler.delay_s = 2 * gate.LATENCY_FACTOR * max(reference.median_s, 0.01) + gate.LATENCY_SLACK_S
    why, _ = gate.recovery_gate(_bed(url), "m", reference, "prev", timeout_s=0.5)
    assert why is not None and "median latency" in why


def test_residue_finds_a_fault_process_of_that_case_only(tmp_path):
    proc = procs.spawn(["sleep", "30"], "case1.0.cpu-contention.abc")
    try:
        time.sleep(0.2)
        assert any(str(proc.pid) in r for r in residue._marked_processes("case1."))
        assert residue._marked_processes("case2.") == []
    finally:
        proc.kill()
        proc.wait()
    assert residue._marked_processes("case1.") == []


def test_residue_finds_a_device_setting_left(tmp_path):
    from chaosbench.backends.base import DeviceControl

    dev = DeviceControl(tmp_path, "rank-1")
    dev.set(sm_clock_mhz=500)
    assert residue._device_controls(tmp_path) == ["device control of rank-1 still sets sm_clock_mhz"]
    dev.reset()
    assert residue._device_controls(tmp_path) == []
    assert residue._device_controls(Path(tmp_path / "missing")) == []
