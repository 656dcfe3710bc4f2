"""The emulated device layer: control file -> slowdown factors, KV pool share, XID, dcgm-exporter metrics."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from harness.backends.base import DeviceControl
from harness.engines.mini.device import (
    DEFAULT_POWER_W,
    MAX_SM_CLOCK_MHZ,
    REASON_SW_POWER_CAP,
    DeviceError,
    DeviceLayer,
    DeviceState,
    parse_control,
)


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
    return DeviceLayer("rank-2", 2, str(tmp_path), num_blocks=64, **kw), DeviceControl(tmp_path, "rank-2")


def test_factors() -> None:
    assert DeviceState().slowdown == 1.0
    assert DeviceState(power_limit_w=DEFAULT_POWER_W / 4).slowdown == pytest.approx(2.0)  # (default/limit)**0.5
    assert DeviceState(sm_clock_mhz=MAX_SM_CLOCK_MHZ / 3).slowdown == pytest.approx(3.0)
    both = DeviceState(power_limit_w=DEFAULT_POWER_W / 4, sm_clock_mhz=MAX_SM_CLOCK_MHZ / 3)
    assert both.slowdown == pytest.approx(3.0)  # the lower clock wins
    assert DeviceState(power_limit_w=1000).slowdown == 1.0  # a higher limit never speeds up
    assert parse_control({"mem_pool_fraction": 2, "xid": True, "seq": "x"}).mem_pool_fraction == 1.0


def test_control_file_drives_clock_power_and_reasons(tmp_path: Path) -> None:
    layer, ctl = _layer(tmp_path)
    base = _scrape(layer)
    assert base["DCGM_FI_DEV_SM_CLOCK"] == MAX_SM_CLOCK_MHZ
    assert base["DCGM_FI_DEV_POWER_MGMT_LIMIT"] == DEFAULT_POWER_W
    assert int(base["DCGM_FI_DEV_CLOCKS_EVENT_REASONS"]) & REASON_SW_POWER_CAP == 0
    layer.record_busy(5.0)  # fully busy: the uncapped draw is above 150 W
    ctl.set(power_limit_w=150)
    layer.poll()
    capped = _scrape(layer)
    assert capped["DCGM_FI_DEV_POWER_USAGE"] <= 150
    assert capped["DCGM_FI_DEV_POWER_MGMT_LIMIT"] == 150
    assert int(capped["DCGM_FI_DEV_CLOCKS_EVENT_REASONS"]) & REASON_SW_POWER_CAP
    assert capped["DCGM_FI_DEV_SM_CLOCK"] == pytest.approx(MAX_SM_CLOCK_MHZ / (DEFAULT_POWER_W / 150) ** 0.5)
    assert capped["DCGM_FI_DEV_GPU_UTIL"] > 90
    ctl.reset()
    ctl.set(sm_clock_mhz=500)
    layer.poll()
    locked = _scrape(layer)
    assert locked["DCGM_FI_DEV_SM_CLOCK"] == 500
    assert locked["DCGM_FI_DEV_POWER_USAGE"] > 150  # clock lock does not touch power
    assert layer.state.slowdown == pytest.approx(MAX_SM_CLOCK_MHZ / 500)


def test_throttle_spends_real_time(tmp_path: Path) -> None:
    layer, ctl = _layer(tmp_path)
    ctl.set(sm_clock_mhz=MAX_SM_CLOCK_MHZ // 3)
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
    m = _scrape(layer)
    assert m["DCGM_FI_DEV_XID_ERRORS"] == 79 and m["chaosbench_device_xid_total"] == 1
    # the restarted rank gets the device history and does not fail again on the same seq
    again, _ = _layer(tmp_path, handled_xid_seq=layer.handled_xid_seq, xid_count=1, last_xid=79)
    again.poll()
    ctl.set(xid=48)
    with pytest.raises(DeviceError):
        again.poll()
    assert _scrape(again)["chaosbench_device_xid_total"] == 2


def test_missing_or_broken_control_file_means_default(tmp_path: Path) -> None:
    layer, ctl = _layer(tmp_path)
    ctl.path.write_text("{not json")
    assert layer.poll() == DeviceState()
    ctl.path.unlink()
    assert layer.poll() == DeviceState()
