"""The four emulated GPU faults against the engine's own device layer (harness.engines.mini.device), exported per
rank and scraped by a real Prometheus: verify reads the DCGM_* series, the symptom is the emulated device's state."""

from __future__ import annotations

import time

import pytest
from faultbed import FaultBed, make_step
from test_injectors import run_fault

from harness.faults.mech.device import fresh_query, query, series

pytestmark = pytest.mark.root


def metric(bed: FaultBed, name: str, rank: str = "rank-1") -> float | None:
    return query(bed.prometheus_url, series(name, rank))


def test_gpu_power_cap(gpu_bed: FaultBed) -> None:
    step = make_step("gpu-power-cap", rank=1, params={"watts": 150})
    ev, usage = run_fault(gpu_bed, step, lambda h: metric(gpu_bed, "DCGM_FI_DEV_POWER_USAGE"))
    assert ev.value == 150 and ev.extra["clocks_event_reasons"] & 0x4
    assert usage is not None and usage <= 150
    assert metric(gpu_bed, "DCGM_FI_DEV_POWER_MGMT_LIMIT", "rank-0") == 400  # the other rank is untouched


def test_gpu_clock_lock(gpu_bed: FaultBed) -> None:
    step = make_step("gpu-clock-lock", rank=1, params={"sm_clock_mhz": 500})
    ev, _ = run_fault(gpu_bed, step)
    assert ev.value == 500
    time.sleep(1.5)  # one scrape after recovery
    assert metric(gpu_bed, "DCGM_FI_DEV_SM_CLOCK") == 1980  # unlocked again


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
    assert ev.value >= 1
    assert metric(gpu_bed, "DCGM_FI_DEV_XID_ERRORS") == 48
