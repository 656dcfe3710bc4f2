"""The emulated device: an H100 SXM5 model driven by load (clocks, power, temperature, noise), the control
file's faults (power cap, clock lock, memory pressure, XID, collective hang) and the dcgm-exporter metrics."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chaosbench.backends.base import DeviceControl
from chaosbench.engines.mini.device import (
    H100_SXM5,
    REASON_APPLICATIONS_CLOCKS,
    REASON_GPU_IDLE,
    REASON_SW_POWER_CAP,
    DeviceError,
    DeviceLayer,
    DeviceState,
    GpuModel,
    Reading,
    parse_control,
)

SPEC = H100_SXM5


def _scrape(layer: DeviceLayer) -> dict[str, float]:
    reg = CollectorRegistry()
    reg.register(layer)
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for sample in fam.samples:
            assert sample.labels["rank"] == layer.rank and sample.labels["emulated"] == "true"
            out[sample.name] = sample.value
    return out


def _layer(tmp_path: Path, **kw) -> tuple[DeviceLayer, DeviceControl]:
    return DeviceLayer("rank-2", 2, str(tmp_path), num_blocks=64, seed=1, **kw), DeviceControl(tmp_path, "rank-2")


def _run(model: GpuModel, state: DeviceState, util: float, work: float, seconds: int, t0: float = 0.0,
         active: bool = True) -> list[Reading]:
    """One reading per second for ``seconds`` seconds at a constant load."""
    return [model.step(t0 + k, state, util, work, active and util > 0) for k in range(1, seconds + 1)]


def test_idle_clocks_drop_and_load_boosts_within_headroom() -> None:
    m = GpuModel(seed=0)
    idle = _run(m, DeviceState(), 0.0, 0.0, 30)
    assert {r.sm_clock_mhz for r in idle} == {SPEC.idle_sm_mhz}
    assert all(r.reasons & REASON_GPU_IDLE for r in idle)
    assert all(SPEC.idle_w * 0.95 < r.power_w < 90 for r in idle)
    busy = _run(m, DeviceState(), 0.9, 0.5, 30, t0=30)
    assert all(r.sm_clock_mhz >= SPEC.base_sm_mhz for r in busy)
    assert max(r.sm_clock_mhz for r in busy) == SPEC.max_sm_mhz  # cool board, power headroom: full boost
    assert all(r.reasons == 0 for r in busy)
    assert all(r.mem_clock_mhz == SPEC.mem_mhz for r in idle + busy)  # HBM3 does not follow load


def test_power_and_temperature_follow_load_with_thermal_lag_and_noise() -> None:
    low, high = GpuModel(seed=1), GpuModel(seed=1)
    lo = _run(low, DeviceState(), 0.5, 0.15, 600)
    hi = _run(high, DeviceState(), 0.95, 0.6, 600)
    p_lo, p_hi = statistics.mean(r.power_w for r in lo[-60:]), statistics.mean(r.power_w for r in hi[-60:])
    assert 150 < p_lo < 260 and 400 < p_hi < SPEC.tdp_w
    assert statistics.stdev(r.power_w for r in hi[-60:]) > 1.0  # sensor noise
    assert len({r.temp_c for r in hi[-60:]}) > 1
    # first-order lag: a step in load reaches ~63 % of its temperature rise after one time constant
    start = SPEC.inlet_c + SPEC.thermal_r_c_per_w * SPEC.idle_w
    final = statistics.mean(r.temp_c for r in hi[-30:])
    tau = int(SPEC.thermal_tau_s)
    assert hi[0].temp_c < start + 0.1 * (final - start) + 1
    assert (hi[tau - 1].temp_c - start) / (final - start) == pytest.approx(0.63, abs=0.08)
    assert final > statistics.mean(r.temp_c for r in lo[-30:]) + 10
    assert 60 < final < SPEC.slowdown_c
    # a hot board loses boost bins: the clock itself moves with load
    assert statistics.mean(r.sm_clock_mhz for r in hi[-30:]) < statistics.mean(r.sm_clock_mhz for r in lo[-30:])


def test_power_cap_holds_draw_at_the_cap_and_sets_the_bit_only_while_it_binds() -> None:
    cap = DeviceState(power_limit_w=200)
    m = GpuModel(seed=2)
    busy = _run(m, cap, 0.95, 0.6, 60)
    assert all(r.reasons & REASON_SW_POWER_CAP for r in busy)
    assert statistics.mean(r.power_w for r in busy) == pytest.approx(200, rel=0.03)
    assert all(r.sm_clock_mhz < SPEC.base_sm_mhz for r in busy)
    assert len({r.sm_clock_mhz for r in busy}) > 1  # the power controller hunts
    assert m.slowdown(cap, 0.6, 0.35) > 1.5
    light = _run(m, cap, 0.3, 0.05, 30, t0=60)  # demand below the cap: no throttling, no bit
    assert not any(r.reasons & REASON_SW_POWER_CAP for r in light)
    assert all(r.power_w < 195 for r in light)
    idle = _run(m, cap, 0.0, 0.0, 10, t0=90)
    assert not any(r.reasons & REASON_SW_POWER_CAP for r in idle)
    assert DeviceState(power_limit_w=150).enforced_limit() == SPEC.min_power_limit_w  # the board's range


def test_clock_lock_no_longer_follows_load() -> None:
    lock = DeviceState(sm_clock_mhz=600)
    m, free = GpuModel(seed=3), GpuModel(seed=3)
    seen = _run(m, lock, 0.0, 0.0, 10) + _run(m, lock, 0.9, 0.5, 20, t0=10) + _run(m, lock, 0.3, 0.1, 10, t0=30)
    assert {r.sm_clock_mhz for r in seen} == {600}
    assert all(r.reasons & REASON_APPLICATIONS_CLOCKS and not r.reasons & REASON_SW_POWER_CAP for r in seen)
    unlocked = _run(free, DeviceState(), 0.9, 0.5, 20, t0=10)
    assert statistics.mean(r.power_w for r in seen[10:30]) < statistics.mean(r.power_w for r in unlocked) - 100
    assert m.slowdown(lock, 0.5, 0.4) == pytest.approx(SPEC.max_sm_mhz / 600)


def test_layer_utilisation_counts_the_step_in_flight(tmp_path: Path) -> None:
    layer, _ = _layer(tmp_path)
    assert layer.shares()[:2] == (0.0, 0.0)
    layer.begin_busy()
    time.sleep(0.3)
    util, work, active = layer.shares()
    assert util == pytest.approx(0.3, abs=0.1) and work == 0.0 and active  # a hung collective reads busy
    layer.throttle(0.1)
    layer.record_busy(0.4)
    assert layer.shares()[1] == pytest.approx(0.1, abs=0.01)
    m = _scrape(layer)
    assert 20 <= m["DCGM_FI_DEV_GPU_UTIL"] <= 60
    assert m["DCGM_FI_DEV_SM_CLOCK"] > SPEC.base_sm_mhz and m["DCGM_FI_DEV_MEM_CLOCK"] == SPEC.mem_mhz
    assert 20 < m["DCGM_FI_DEV_GPU_TEMP"] < 50
    assert "chaosbench_device_xid_total" not in m


def test_control_file_power_cap_and_clock_lock_reach_the_metrics(tmp_path: Path) -> None:
    layer, ctl = _layer(tmp_path)
    base = _scrape(layer)
    assert base["DCGM_FI_DEV_POWER_MGMT_LIMIT"] == SPEC.tdp_w
    assert base["DCGM_FI_DEV_SM_CLOCK"] == SPEC.idle_sm_mhz  # nothing ran yet
    ctl.set(power_limit_w=250)
    layer.poll()
    layer.begin_busy()
    time.sleep(0.2)
    layer.throttle(0.6)  # heavy compute inside the step
    capped = _scrape(layer)
    assert capped["DCGM_FI_DEV_POWER_MGMT_LIMIT"] == 250
    assert int(capped["DCGM_FI_DEV_CLOCKS_EVENT_REASONS"]) & REASON_SW_POWER_CAP
    assert capped["DCGM_FI_DEV_POWER_USAGE"] == pytest.approx(250, rel=0.05)
    ctl.reset()
    ctl.set(sm_clock_mhz=500)
    layer.poll()
    locked = _scrape(layer)
    assert locked["DCGM_FI_DEV_SM_CLOCK"] == 500
    assert int(locked["DCGM_FI_DEV_CLOCKS_EVENT_REASONS"]) & REASON_APPLICATIONS_CLOCKS


def test_throttle_spends_real_time(tmp_path: Path) -> None:
    layer, ctl = _layer(tmp_path)
    ctl.set(sm_clock_mhz=int(SPEC.max_sm_mhz) // 3)
    layer.poll()
    t0 = time.perf_counter()
    layer.throttle(0.05)  # the region ran 50 ms: add (3-1) x 50 ms
    assert time.perf_counter() - t0 >= 0.095
    ctl.reset()
    layer.poll()
    t0 = time.perf_counter()
    layer.throttle(0.05)
    assert time.perf_counter() - t0 < 0.02


def test_memory_pool_fraction_shrinks_blocks_and_raises_fb_used(tmp_path: Path) -> None:
    layer, ctl = _layer(tmp_path)
    before = _scrape(layer)
    assert layer.usable_blocks() == 64
    assert before["DCGM_FI_DEV_FB_USED"] + before["DCGM_FI_DEV_FB_FREE"] == pytest.approx(SPEC.fb_total_mib)
    ctl.set(mem_pool_fraction=0.75)
    layer.poll()
    assert layer.usable_blocks() == 16
    after = _scrape(layer)
    assert after["DCGM_FI_DEV_FB_USED"] > before["DCGM_FI_DEV_FB_USED"]
    assert after["DCGM_FI_DEV_FB_FREE"] < before["DCGM_FI_DEV_FB_FREE"]


def test_xid_raises_once_per_seq_and_survives_restart(tmp_path: Path) -> None:
    layer, ctl = _layer(tmp_path)
    layer.poll()
    ctl.set(xid=79)
    with pytest.raises(DeviceError) as info:
        layer.poll()
    assert info.value.xid == 79 and "NVRM: Xid (PCI:0000:03:00): 79" in str(info.value)
    assert "emulated" in str(info.value)
    layer.poll()  # same seq: no second error
    assert _scrape(layer)["DCGM_FI_DEV_XID_ERRORS"] == 79
    # the restarted rank gets the device history and does not fail again on the same seq
    again, _ = _layer(tmp_path, handled_xid_seq=layer.handled_xid_seq, xid_count=1, last_xid=79)
    again.poll()
    assert _scrape(again)["DCGM_FI_DEV_XID_ERRORS"] == 79
    ctl.set(xid=48)
    with pytest.raises(DeviceError):
        again.poll()
    assert _scrape(again)["DCGM_FI_DEV_XID_ERRORS"] == 48


def test_collective_hang_flag(tmp_path: Path) -> None:
    layer, ctl = _layer(tmp_path)
    assert not layer.refresh().collective_hang
    ctl.set(collective_hang=True)
    assert layer.refresh().collective_hang
    assert not parse_control({"collective_hang": 1}).collective_hang  # only a real true


def test_missing_or_broken_control_file_means_default(tmp_path: Path) -> None:
    layer, ctl = _layer(tmp_path)
    ctl.path.write_text("{not json")
    assert layer.poll() == DeviceState()
    ctl.path.unlink()
    assert layer.poll() == DeviceState()
