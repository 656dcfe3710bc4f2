"""The mini engine's emulated device layer: its control file (write, restore) and its DCGM_* metrics.

Writes go through ``chaosbench.backends.base.DeviceControl`` (the engine polls the file once per step). The
metric read-back goes to the testbed's Prometheus, which scrapes the rank's dcgm-style exporter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaosbench.backends.base import DeviceControl, Testbed
from chaosbench.case import atomic_write_json

RANK_LABEL = "rank"  # the label the engine's device exporter puts on DCGM_* series (rank-<i>)


def control(path: str | Path) -> DeviceControl:
    p = Path(path)
    return DeviceControl(p.parent, p.stem)


def previous(path: str | Path, keys: list[str]) -> dict[str, Any]:
    """Current values of ``keys`` (None for absent ones): what recovery writes back."""
    state = control(path).read()
    return {k: state.get(k) for k in keys}


def apply(path: str | Path, fields: dict[str, Any]) -> None:
    control(path).set(**fields)


def restore(path: str | Path, prev: dict[str, Any]) -> None:
    """Put ``prev`` back (None = field absent), keeping other fields; a new seq so the engine re-reads it."""
    dev = control(path)
    if not dev.path.parent.is_dir():
        return  # the testbed (and its control dir) is gone: nothing to undo
    state = dev.read()
    for key, value in prev.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    state["seq"] = int(state.get("seq", 0)) + 1
    atomic_write_json(dev.path, state)


def query(prometheus_url: str | None, promql: str) -> float | None:
    """First sample of an instant query, or None (no Prometheus, no series, error)."""
    if not prometheus_url:
        return None
    import httpx

    try:
        r = httpx.get(f"{prometheus_url.rstrip('/')}/api/v1/query", params={"query": promql}, timeout=3.0)
        result = r.json()["data"]["result"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None
    if not result:
        return None
    return float(result[0]["value"][1])


def fresh_query(prometheus_url: str | None, series_sel: str, timeout: float = 5.0) -> float | None:
    """Value of a plain series from a scrape taken after this call started (a baseline must not be stale:
    the previous fault on the same rank may have been recovered a moment ago)."""
    import time

    asked, deadline = time.time(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        ts = query(prometheus_url, f"timestamp({series_sel})")
        if ts is None or ts >= asked:
            break
        time.sleep(0.2)
    return query(prometheus_url, series_sel)


def series(metric: str, rank: str) -> str:
    return f'{metric}{{{RANK_LABEL}="{rank}"}}'


def control_path(testbed: Testbed, rank: str) -> str:
    return str(testbed.device(rank).path)


def check_control_dir(fault_id: str, testbed: Testbed, rank: str) -> None:
    from chaosbench.errors import PreflightFailed

    path = testbed.device(rank).path
    if not path.parent.is_dir():
        raise PreflightFailed(f"{fault_id}: the device control dir {path.parent} does not exist (engine not mini?)")
    if not testbed.prometheus_url:
        raise PreflightFailed(f"{fault_id}: the testbed has no Prometheus to read the DCGM_* verify signal from")
