"""The lifecycle: case files and events, and recovery on every exit path (success, exception, Ctrl-C, SIGTERM,
SIGKILL + journal replay), each checked by a before/after snapshot of the bed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faultbed import FaultBed, Traffic, make_step, snapshot

from chaosbench.case import CaseView, CaseWriter, read_ground_truth
from chaosbench.errors import FaultNotVerified, PreflightFailed
from chaosbench.faults.journal import CASE_JOURNAL, replay_fault_journals
from chaosbench.faults.lifecycle import injected

pytestmark = pytest.mark.root
CHILD = Path(__file__).with_name("harness_child.py")


def writer_for(tmp_path: Path, bed: FaultBed, name: str = "case") -> CaseWriter:
    return CaseWriter(tmp_path / f"{bed.bridge}-{name}")


def stages(writer: CaseWriter) -> list[tuple[str, str, str]]:
    lines = (writer.path / "events.jsonl").read_text().splitlines()
    return [(r["stage"], r["event"], r["status"]) for r in map(json.loads, lines)]


def test_success_writes_ground_truth_and_leaves_nothing(bed: FaultBed, tmp_path: Path, recovery_dir: Path) -> None:
    before = snapshot(bed)
    w = writer_for(tmp_path, bed)
    step = make_step("cpu-throttle", node="node-1", params={"cpu_percent": 10, "period_us": 20000})
    with injected(bed, step, w, 0) as fault:
        assert fault.verified and fault.evidence is not None
        assert snapshot(bed) != before
        assert (w.path / CASE_JOURNAL).is_file() and list(recovery_dir.glob("*.jsonl"))
        time.sleep(0.3)
    assert snapshot(bed) == before
    assert not (w.path / CASE_JOURNAL).exists() and not list(recovery_dir.glob("*.jsonl"))
    truth = json.loads((w.path / "ground_truth.json").read_text())
    assert truth["fault_id"] == "cpu-throttle" and truth["component"] == "node-1" and truth["node"] == "node-1"
    assert truth["verified"] is True and truth["realism"] == "real" and truth["rank"] is None
    assert truth["start"] == pytest.approx(fault.verified_at) and truth["end"] == pytest.approx(fault.recovered_at)
    assert truth["start"] >= fault.requested_at and truth["end"] > truth["start"] + 0.3
    assert float((w.path / "inject_time.txt").read_text()) == pytest.approx(fault.verified_at, abs=1e-3)
    got = stages(w)
    for stage in ("fault.preflight", "fault.inject", "fault.verify", "fault.recover"):
        assert (stage, "end", "ok") in got
    case = w.finalize({"name": "t"}, "completed")
    assert all(not e["stage"].startswith("fault") for e in CaseView(case).events())
    assert read_ground_truth(case)["fault_id"] == "cpu-throttle"


def test_rank_fault_ground_truth_names_rank_and_node(bed: FaultBed, tmp_path: Path) -> None:
    w = writer_for(tmp_path, bed)
    with injected(bed, make_step("nccl-hang", rank=1, params={"mode": "sigstop"}), w, 0) as fault:
        assert snapshot(bed)["rank states"]["rank-1"] == "stopped"
        fault.abort("stop condition: test")
    truth = json.loads((w.path / "ground_truth.json").read_text())
    assert (truth["component"], truth["rank"], truth["node"]) == ("rank-1", 1, "node-1")
    assert snapshot(bed)["rank states"]["rank-1"] == "running"
    assert ("fault.abort", "point", "ok") in stages(w)


@pytest.mark.parametrize("exc", [RuntimeError("runner bug"), KeyboardInterrupt()])
def test_exception_in_block_recovers(bed: FaultBed, tmp_path: Path, exc: BaseException) -> None:
    before = snapshot(bed)
    step = make_step("cpu-contention", node="node-1", params={"workers": 2}, timeout="30s")  # slow machine: verify
    with pytest.raises(type(exc)):
        with injected(bed, step, writer_for(tmp_path, bed), 0):
            raise exc
    assert snapshot(bed) == before


def test_not_verified_recovers_and_raises(bed: FaultBed, tmp_path: Path) -> None:
    before = snapshot(bed)
    w = writer_for(tmp_path, bed)
    # no traffic leaves node-1, so the delay handler never holds a packet: the signal cannot be seen
    step = make_step("network-delay", node="node-1", params={"delay_ms": 50.0}, timeout="1s")
    with pytest.raises(FaultNotVerified, match="not seen"):
        with injected(bed, step, w, 0):
            pytest.fail("the block must not run for an unverified required fault")
    assert snapshot(bed) == before
    truth = json.loads((w.path / "ground_truth.json").read_text())
    assert truth["verified"] is False and truth["end"] is not None
    assert ("fault.verify", "end", "failed") in stages(w)


def test_preflight_failure_changes_nothing(bed: FaultBed, tmp_path: Path) -> None:
    before = snapshot(bed)
    with pytest.raises(PreflightFailed, match="node-7"):
        with injected(bed, make_step("cpu-throttle", node="node-7"), writer_for(tmp_path, bed), 0):
            pass
    assert snapshot(bed) == before


def start_child(bed: FaultBed, tmp_path: Path, step: dict) -> subprocess.Popen[str]:
    bed_json = tmp_path / "bed.json"
    bed_json.write_text(bed.to_json())
    case = tmp_path / "results" / f"{bed.bridge}-child"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), str(CHILD.parents[2])])}
    proc = subprocess.Popen([sys.executable, str(CHILD), str(bed_json), str(case), json.dumps(step)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if line.strip() != "INJECTED":
        proc.kill()
        pytest.fail(f"child harness did not inject: {line!r} {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
    return proc


CHILD_CASES = [
    (signal.SIGTERM, {"fault_id": "cpu-throttle", "node": "node-1", "params": {"cpu_percent": 10}}),
    (signal.SIGINT, {"fault_id": "network-delay", "node": "node-1", "params": {"delay_ms": 30.0}}),
    (signal.SIGKILL, {"fault_id": "cpu-contention", "node": "node-1", "params": {"workers": 2}}),
    (signal.SIGKILL, {"fault_id": "network-delay", "node": "node-1",
                      "params": {"delay_ms": 30.0, "loss_percent": 5.0}}),
    (signal.SIGKILL, {"fault_id": "nccl-hang", "rank": 1, "params": {"mode": "sigstop"}}),
]


@pytest.mark.parametrize(("sig", "step"), CHILD_CASES, ids=[f"{s.name}-{c['fault_id']}" for s, c in CHILD_CASES])
def test_child_harness_killed(bed: FaultBed, tmp_path: Path, sig: signal.Signals, step: dict) -> None:
    before = snapshot(bed)
    with Traffic(bed.nodes["node-1"].ip):
        proc = start_child(bed, tmp_path, step)
        assert snapshot(bed) != before, "the fault is in"
        proc.send_signal(sig)
        proc.wait(timeout=30)
        if sig == signal.SIGKILL:
            assert snapshot(bed) != before, "nobody recovered yet"
            assert replay_fault_journals(tmp_path / "results") == 1
            assert replay_fault_journals(tmp_path / "results") == 0  # idempotent: marked done
    assert snapshot(bed) == before, proc.stderr.read()[-2000:]  # type: ignore[union-attr]
