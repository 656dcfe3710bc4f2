"""The four emulated GPU faults against the engine's own device layer (chaosbench.engines.mini.device), exported per
rank and scraped by a real Prometheus: verify reads the DCGM_* series, the symptom is the emulated device's state."""

from __future__ import annotations

import time

import pytest
from faultbed import FaultBed, make_step
from test_injectors import run_fault

from chaosbench.faults.mech.device import fresh_query, query, series

pytestmark = pytest.mark.root


def metric(bed: FaultBed, name: str, rank: str = "rank-1") -> float | None:
    return query(bed.prometheus_url, series(name, rank))


def test_gpu_power_cap(gpu_bed: FaultBed) -> None:
    step = make_step("gpu-power-cap", rank=1, params={"watts": 150})
    ev, usage = run_fault(gpu_bed, step, lambda h: metric(gpu_bed, "DCGM_FI_DEV_POWER_USAGE"))
    assert ev.value == 200  # the emulated H100 SXM5 enforces 200..700 W, as nvidia-smi -pl would
    assert ev.extra["clocks_event_reasons"] & 0x4  # verified only once the draw sits at the cap
    assert usage is not None and usage <= 200 * 1.05
    assert metric(gpu_bed, "DCGM_FI_DEV_POWER_MGMT_LIMIT", "rank-0") == 700  # the other rank is untouched


def test_gpu_clock_lock(gpu_bed: FaultBed) -> None:
    step = make_step("gpu-clock-lock", rank=1, params={"sm_clock_mhz": 500})
    ev, _ = run_fault(gpu_bed, step)
    assert ev.value == 500
    time.sleep(1.5)  # one scrape after recovery
    assert metric(gpu_bed, "DCGM_FI_DEV_SM_CLOCK") > 1590  # unlocked again: boost under load


@pytest.mark.parametrize("mode", ["fixed", "growing"])
def test_gpu_memory_pressure(gpu_bed: FaultBed, mode: str) -> None:
    step = make_step("gpu-memory-pressure", rank=1, params={"fraction": 0.8, "mode": mode}, duration="4s")
    before = fresh_query(gpu_bed.prometheus_url, series("DCGM_FI_DEV_FB_FREE", "rank-1"))

    def free_after(h):  # growing: the ramp reaches 80% by the end of the 4 s window
        deadline = time.monotonic() + 10
        while (free := metric(gpu_bed, "DCGM_FI_DEV_FB_FREE")) is not None and free >= before * 0.5:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        return free

    ev, free = run_fault(gpu_bed, step, free_after)
    assert ev.value > ev.extra["fb_used_before"]
    assert before is not None and free is not None and free < before * 0.5  # 80% of the board taken


def test_gpu_xid_error(gpu_bed: FaultBed) -> None:
    step = make_step("gpu-xid-error", rank=1, params={"xid": 48})
    ev, _ = run_fault(gpu_bed, step)
    assert ev.value == 48 and ev.at is not None  # verified by the XID log line, before any scrape shows it
    deadline = time.monotonic() + 10
    while metric(gpu_bed, "DCGM_FI_DEV_XID_ERRORS") != 48 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert metric(gpu_bed, "DCGM_FI_DEV_XID_ERRORS") == 48


def test_nccl_hang_collective(gpu_bed: FaultBed) -> None:
    """The rank blocks in its collective: its exporter keeps answering and its GPU reads busy while its
    all-reduce count stands still; recovery lets the collective complete."""
    step = make_step("nccl-hang", rank=1, timeout="15s", duration="3s")
    count = "chaosbench_rank_allreduce_seconds_count"
    ev, during = run_fault(gpu_bed, step, lambda h: (metric(gpu_bed, count), metric(gpu_bed, "DCGM_FI_DEV_GPU_UTIL"),
                                                     metric(gpu_bed, count, "rank-0")))
    assert ev.signal == "all-reduce count" and ev.at is not None and ev.extra["gpu_util"] >= 50
    stalled, util, peer = during
    assert stalled == ev.value and util >= 50
    time.sleep(2.5)
    assert metric(gpu_bed, count) > stalled  # completes again after recovery
    assert metric(gpu_bed, count, "rank-0") > peer  # the bed's ranks are independent loops: rank-0 never waited
