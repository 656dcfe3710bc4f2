"""The emulated GPU of one rank (a CPU cannot have GPU clocks, power or device memory).

The faults engineer writes ``<control_dir>/rank-N.json`` (see harness.backends.base.DeviceControl);
the rank polls it by mtime once per step. Effects are EMULATED and labelled so:
- ``power_limit_w`` below the default: kernels run (default/limit)**0.5 times longer, power usage
  is pinned at or below the cap, the SW power-cap clock-event bit (0x4) is set.
- ``sm_clock_mhz``: kernels run max_clock/locked times longer; the SM clock metric shows it.
- ``mem_pool_fraction``: that share of the rank's KV blocks is taken; device memory used goes up.
- ``xid`` with a new ``seq``: the next step raises a DeviceError (the worker fails).
The slowdown is real time spent inside the rank's profiled compute region.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

MAX_SM_CLOCK_MHZ = 1980
DEFAULT_POWER_W = 400
IDLE_POWER_W = 60
BUSY_POWER_W = 330  # draw at 100% utilisation without a cap
FB_TOTAL_MIB = 81559  # an 80 GB board
ENGINE_FB_SHARE = 0.9  # what the engine reserves (vLLM's gpu_memory_utilization)
UTIL_WINDOW_S = 5.0

# DCGM_FI_DEV_CLOCKS_EVENT_REASONS bits (nvml clocks_event_reasons)
REASON_GPU_IDLE = 0x1
REASON_APPLICATIONS_CLOCKS = 0x2
REASON_SW_POWER_CAP = 0x4
REASON_HW_SLOWDOWN = 0x8
REASON_SW_THERMAL = 0x20
REASON_HW_THERMAL = 0x40


class DeviceError(RuntimeError):
    """An emulated XID: the device fell over and the worker on it must fail."""

    def __init__(self, rank: str, xid: int, seq: int, pid: int):
        self.rank, self.xid, self.seq, self.pid = rank, xid, seq, pid
        super().__init__(kmsg_line(rank, xid, pid))

    def __reduce__(self):
        return (DeviceError, (self.rank, self.xid, self.seq, self.pid))


def kmsg_line(rank: str, xid: int, pid: int) -> str:
    index = int(rank.rsplit("-", 1)[-1])
    return (f"NVRM: Xid (PCI:0000:{index + 1:02x}:00): {xid}, pid={pid}, name=mini-{rank}, "
            f"GPU has fallen off the bus. [emulated by the chaosbench device layer]")


@dataclass(frozen=True)
class DeviceState:
    power_limit_w: float = DEFAULT_POWER_W
    sm_clock_mhz: float | None = None  # locked clock, None = unlocked
    mem_pool_fraction: float = 0.0
    xid: int | None = None
    seq: int = 0

    @property
    def effective_clock_mhz(self) -> float:
        clock = float(MAX_SM_CLOCK_MHZ)
        if self.sm_clock_mhz:
            clock = min(clock, max(1.0, self.sm_clock_mhz))
        if self.power_limit_w < DEFAULT_POWER_W:
            clock = min(clock, MAX_SM_CLOCK_MHZ / (DEFAULT_POWER_W / max(1.0, self.power_limit_w)) ** 0.5)
        return clock

    @property
    def slowdown(self) -> float:
        """Factor by which every kernel on this device takes longer (>= 1)."""
        return MAX_SM_CLOCK_MHZ / self.effective_clock_mhz


def parse_control(data: dict) -> DeviceState:
    def num(key: str) -> float | None:
        v = data.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    frac = min(max(num("mem_pool_fraction") or 0.0, 0.0), 1.0)
    xid = num("xid")
    return DeviceState(power_limit_w=num("power_limit_w") or DEFAULT_POWER_W, sm_clock_mhz=num("sm_clock_mhz"),
                       mem_pool_fraction=frac, xid=int(xid) if xid else None, seq=int(num("seq") or 0))


class DeviceLayer:
    def __init__(self, rank: str, index: int, control_dir: str, num_blocks: int, *,
                 handled_xid_seq: int = 0, xid_count: int = 0, last_xid: int = 0):
        self.rank, self.index, self.num_blocks = rank, index, num_blocks
        self.path = Path(control_dir) / f"{rank}.json" if control_dir else None
        self.state = DeviceState()
        self.handled_xid_seq = handled_xid_seq
        self.xid_count, self.last_xid = xid_count, last_xid
        self._mtime: float | None = None
        self._busy: deque[tuple[float, float]] = deque()  # (end time, busy seconds)
        self._lock = threading.Lock()

    def poll(self) -> DeviceState:
        """Re-read the control file if it changed; raise DeviceError for a new XID (steps only)."""
        s = self.refresh()
        if s.xid and s.seq > self.handled_xid_seq:
            self.handled_xid_seq = s.seq
            self.xid_count += 1
            self.last_xid = s.xid
            raise DeviceError(self.rank, s.xid, s.seq, os.getpid())
        return s

    def refresh(self) -> DeviceState:
        """Re-read the control file if its mtime changed (also called at scrape time)."""
        if self.path is not None:
            try:
                mtime = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                mtime = None
            if mtime != self._mtime:
                self._mtime = mtime
                self.state = parse_control(self._read()) if mtime is not None else DeviceState()
        return self.state

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())  # type: ignore[union-attr]
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def usable_blocks(self) -> int:
        return int(self.num_blocks * (1.0 - self.state.mem_pool_fraction))

    def throttle(self, compute_s: float) -> None:
        """Called after a kernel region ran for ``compute_s``: stretch it by the slowdown factor."""
        extra = (self.state.slowdown - 1.0) * compute_s
        if extra > 0:
            time.sleep(extra)

    def record_busy(self, seconds: float) -> None:
        now = time.time()
        with self._lock:
            self._busy.append((now, seconds))
            while self._busy and self._busy[0][0] < now - UTIL_WINDOW_S:
                self._busy.popleft()

    def utilisation(self) -> float:
        now = time.time()
        with self._lock:
            busy = sum(b for t, b in self._busy if t >= now - UTIL_WINDOW_S)
        return min(1.0, busy / UTIL_WINDOW_S)

    def collect(self):
        """Prometheus collector: dcgm-exporter names, computed at scrape time."""
        s, util = self.refresh(), self.utilisation()
        demand = IDLE_POWER_W + util * (BUSY_POWER_W - IDLE_POWER_W)
        capped = s.power_limit_w < DEFAULT_POWER_W
        power = min(demand, s.power_limit_w)
        reasons = (REASON_SW_POWER_CAP if capped else 0) | (REASON_GPU_IDLE if util < 0.01 else 0)
        engine_mib = FB_TOTAL_MIB * ENGINE_FB_SHARE * (1.0 - s.mem_pool_fraction)
        used = min(FB_TOTAL_MIB, engine_mib + FB_TOTAL_MIB * s.mem_pool_fraction) if s.mem_pool_fraction else engine_mib
        values = {
            "DCGM_FI_DEV_SM_CLOCK": ("SM clock frequency (in MHz).", s.effective_clock_mhz),
            "DCGM_FI_DEV_POWER_USAGE": ("Power draw (in W).", power),
            "DCGM_FI_DEV_POWER_MGMT_LIMIT": ("Power management limit (in W).", s.power_limit_w),
            "DCGM_FI_DEV_FB_USED": ("Framebuffer memory used (in MiB).", used),
            "DCGM_FI_DEV_FB_FREE": ("Framebuffer memory free (in MiB).", FB_TOTAL_MIB - used),
            "DCGM_FI_DEV_XID_ERRORS": ("Value of the last XID error encountered.", self.last_xid),
            "DCGM_FI_DEV_GPU_UTIL": ("GPU utilization (in %).", 100.0 * util),
            "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": ("Current clock event reasons (bitmask).", reasons),
        }
        labels = ["gpu", "rank", "UUID", "modelName", "emulated"]
        label_values = [str(self.index), self.rank, f"GPU-mini-{self.index}", "chaosbench emulated device", "true"]
        for name, (doc, value) in values.items():
            fam = GaugeMetricFamily(name, doc + " [emulated]", labels=labels)
            fam.add_metric(label_values, float(value))
            yield fam
        fam = CounterMetricFamily("chaosbench_device_xid", "Emulated XID errors raised on this device.",
                                labels=labels)
        fam.add_metric(label_values, float(self.xid_count))
        yield fam
