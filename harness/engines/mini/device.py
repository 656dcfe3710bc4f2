"""The emulated GPU of one rank (a CPU cannot have GPU clocks, power or device memory).

``GpuModel`` is a small physical model of one NVIDIA H100 SXM5 board, driven by the rank's real work: the
share of time the rank spends inside engine steps (``util``, what NVML calls GPU utilisation: a kernel was
resident) and the share spent computing (``work``: time in the model's compute regions, at full clock).
- SM clock: the idle clock when no step ran for ``IDLE_HOLD_S``; under work GPU Boost runs at the highest
  clock that fits the power limit (draw grows linearly with clock at a given work rate) and the thermal
  headroom (one 15 MHz bin lower per 5 C above 55 C; SW thermal slowdown at 87 C), quantised to 15 MHz bins.
  A locked clock (``nvidia-smi -lgc L,L``) stays at L whatever the load.
- Power: idle draw + (TDP - idle) x clock share x (work + ``COMM_ACTIVITY`` x time spent waiting in
  collectives, which spin) + leakage that grows with temperature; sensor noise ~1 %. A power cap holds the
  draw at the cap and sets the SW power-cap event bit only while the clock is held down by it.
- Temperature: first-order lag (``THERMAL_TAU_S``) towards inlet + thermal resistance x draw; integer C.
- Memory clock: HBM3 runs at its fixed clock in P0 (it does not follow load on this board).

The faults engineer writes ``<control_dir>/rank-N.json`` (see chaosbench.backends.base.DeviceControl); the
rank polls it by mtime once per step. Effects are EMULATED and labelled so:
- ``power_limit_w``: the enforced limit (clamped to the board's 200..700 W range); kernels run
  max_clock/power-limited clock times longer.
- ``sm_clock_mhz``: the clock is locked; kernels run max_clock/locked times longer.
- ``mem_pool_fraction``: that share of the rank's KV blocks is taken; device memory used goes up.
- ``xid`` with a new ``seq``: the next step raises a DeviceError (the worker fails).
- ``collective_hang``: true while the rank blocks inside its next collective (a hung collective), see worker.py.
The slowdown is real time spent inside the rank's profiled compute region.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily


@dataclass(frozen=True)
class GpuSpec:
    """A datacenter GPU's published figures (NVIDIA H100 SXM5 80 GB datasheet; nvidia-smi -q of the board)."""

    model_name: str = "NVIDIA H100 80GB HBM3"
    tdp_w: float = 700.0  # max (and default) power limit of the SXM5 board
    min_power_limit_w: float = 200.0  # lowest limit nvidia-smi -pl accepts
    idle_w: float = 75.0  # P0 idle draw with the engine's memory resident (~70-90 W)
    base_sm_mhz: float = 1590.0
    max_sm_mhz: float = 1980.0  # max boost clock
    idle_sm_mhz: float = 345.0  # SM clock with no work
    mem_mhz: float = 2619.0  # HBM3 memory clock
    fb_total_mib: float = 81559.0  # 80 GB HBM3
    clock_bin_mhz: float = 15.0  # clock steps of GPU Boost
    inlet_c: float = 27.0  # air at the board's inlet
    thermal_r_c_per_w: float = 0.065  # die above inlet per watt: ~32 C idle, ~73 C at TDP
    thermal_tau_s: float = 40.0  # heatsink time constant
    boost_derate_from_c: float = 55.0  # one clock bin lost per 5 C above this
    slowdown_c: float = 87.0  # SW thermal slowdown (max operating temperature)
    leak_w_per_c: float = 0.4  # leakage grows with die temperature


H100_SXM5 = GpuSpec()
COMM_ACTIVITY = 0.25  # a collective kernel spinning on its peers draws this share of a compute kernel's power
IDLE_HOLD_S = 1.0  # clocks drop to idle this long after the last work
UTIL_WINDOW_S = 1.0  # NVML utilisation sample period (1/6 s to 1 s)
ENGINE_FB_SHARE = 0.9  # what the engine reserves (vLLM's gpu_memory_utilization)
POWER_NOISE = 0.008  # relative sensor noise of the power reading
MAX_SM_CLOCK_MHZ = H100_SXM5.max_sm_mhz
DEFAULT_POWER_W = H100_SXM5.tdp_w

# DCGM_FI_DEV_CLOCKS_EVENT_REASONS bits (NVML nvmlClocksEventReason*)
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
    """What the control file asks of the device."""

    power_limit_w: float = DEFAULT_POWER_W
    sm_clock_mhz: float | None = None  # locked clock, None = unlocked
    mem_pool_fraction: float = 0.0
    xid: int | None = None
    seq: int = 0
    collective_hang: bool = False

    def enforced_limit(self, spec: GpuSpec = H100_SXM5) -> float:
        return min(max(self.power_limit_w, spec.min_power_limit_w), spec.tdp_w)


def parse_control(data: dict) -> DeviceState:
    def num(key: str) -> float | None:
        v = data.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    frac = min(max(num("mem_pool_fraction") or 0.0, 0.0), 1.0)
    xid = num("xid")
    return DeviceState(power_limit_w=num("power_limit_w") or DEFAULT_POWER_W, sm_clock_mhz=num("sm_clock_mhz"),
                       mem_pool_fraction=frac, xid=int(xid) if xid else None, seq=int(num("seq") or 0),
                       collective_hang=data.get("collective_hang") is True)


@dataclass(frozen=True)
class Reading:
    """One dcgm-exporter sample of the device."""

    sm_clock_mhz: float
    mem_clock_mhz: float
    power_w: float
    temp_c: float
    util_pct: float
    reasons: int


class GpuModel:
    """Clock, power and temperature of one board, advanced in time from its utilisation and work shares."""

    def __init__(self, spec: GpuSpec = H100_SXM5, seed: int | None = None):
        self.spec = spec
        self.rng = random.Random(seed)
        self.temp_c = spec.inlet_c + spec.thermal_r_c_per_w * spec.idle_w
        self.power_w = spec.idle_w
        self._t: float | None = None

    def busy_clock(self, state: DeviceState, work: float, wait: float) -> tuple[float, int]:
        """The clock GPU Boost runs at under this work (noise-free) and the clock event reasons holding it."""
        s = self.spec
        if state.sm_clock_mhz:
            clock, reasons = min(s.max_sm_mhz, max(s.idle_sm_mhz, state.sm_clock_mhz)), REASON_APPLICATIONS_CLOCKS
        else:
            derate = max(0.0, self.temp_c - s.boost_derate_from_c) // 5.0
            clock, reasons = s.max_sm_mhz - derate * s.clock_bin_mhz, 0
        if self.temp_c >= s.slowdown_c:
            clock, reasons = min(clock, s.base_sm_mhz * 0.7), reasons | REASON_SW_THERMAL
        load = work + COMM_ACTIVITY * wait
        headroom = state.enforced_limit(s) - s.idle_w - self._leak()
        if load > 0 and (s.tdp_w - s.idle_w) * load * clock / s.max_sm_mhz > headroom:
            clock = max(s.idle_sm_mhz, s.max_sm_mhz * headroom / ((s.tdp_w - s.idle_w) * load))
            reasons |= REASON_SW_POWER_CAP
        return clock, reasons

    def slowdown(self, state: DeviceState, work: float, wait: float) -> float:
        """Factor by which every kernel takes longer than at the max boost clock (>= 1)."""
        return self.spec.max_sm_mhz / self.busy_clock(state, work, wait)[0]

    def _leak(self) -> float:
        return self.spec.leak_w_per_c * max(0.0, self.temp_c - 30.0)

    def step(self, now: float, state: DeviceState, util: float, work: float, active: bool) -> Reading:
        """Advance to ``now`` and read the sensors. ``util``: busy share; ``work``: compute share (full clock);
        ``active``: any work within IDLE_HOLD_S (else the clocks drop to idle unless locked)."""
        s = self.spec
        util, work = min(max(util, 0.0), 1.0), min(max(work, 0.0), 1.0)
        wait = max(0.0, util - work)
        clock, reasons = self.busy_clock(state, work, wait)
        if not active:
            reasons &= ~REASON_SW_POWER_CAP
            reasons |= REASON_GPU_IDLE
            if not state.sm_clock_mhz:
                clock = s.idle_sm_mhz
        if reasons & REASON_SW_POWER_CAP:  # the power controller hunts around the limit
            clock += s.clock_bin_mhz * self.rng.choice((-1, 0, 0, 1))
        if not state.sm_clock_mhz or reasons & REASON_SW_POWER_CAP:  # a locked clock reads as set
            clock = max(s.idle_sm_mhz, min(s.max_sm_mhz, round(clock / s.clock_bin_mhz) * s.clock_bin_mhz))
        power = s.idle_w + self._leak() + (s.tdp_w - s.idle_w) * (work + COMM_ACTIVITY * wait) * clock / s.max_sm_mhz
        power = min(power, state.enforced_limit(s))
        power *= 1.0 + self.rng.gauss(0.0, POWER_NOISE)
        dt = 0.0 if self._t is None else max(0.0, now - self._t)
        self._t = now
        target = s.inlet_c + s.thermal_r_c_per_w * power
        self.temp_c += (target - self.temp_c) * (1.0 - math.exp(-dt / s.thermal_tau_s))
        self.power_w = power
        temp = round(self.temp_c + self.rng.gauss(0.0, 0.3))
        return Reading(sm_clock_mhz=clock, mem_clock_mhz=s.mem_mhz, power_w=round(power, 3), temp_c=temp,
                       util_pct=round(100.0 * util), reasons=reasons)


class DeviceLayer:
    def __init__(self, rank: str, index: int, control_dir: str, num_blocks: int, *,
                 handled_xid_seq: int = 0, xid_count: int = 0, last_xid: int = 0, seed: int | None = None,
                 labels: dict[str, str] | None = None):
        self.rank, self.index, self.num_blocks = rank, index, num_blocks
        self.labels = dict(labels or {})  # extra labels on every sample (the rank's replica and stage)
        self.path = Path(control_dir) / f"{rank}.json" if control_dir else None
        self.state = DeviceState()
        self.model = GpuModel(seed=seed)
        self.handled_xid_seq = handled_xid_seq
        self.xid_count, self.last_xid = xid_count, last_xid
        self._mtime: float | None = None
        self._busy: deque[tuple[float, float]] = deque()  # (start, end) of finished steps
        self._work: deque[tuple[float, float]] = deque()  # (end, compute seconds at full clock)
        self._busy_since: float | None = None  # a step in flight
        self._last_active = -math.inf
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

    def slowdown(self) -> float:
        util, work, _ = self.shares()
        return self.model.slowdown(self.state, work, max(0.0, util - work))

    def throttle(self, compute_s: float) -> None:
        """Called after a kernel region ran for ``compute_s``: stretch it by the slowdown factor."""
        extra = (self.slowdown() - 1.0) * compute_s
        if extra > 0:
            time.sleep(extra)
        with self._lock:
            self._work.append((time.time(), compute_s))

    def begin_busy(self) -> None:
        with self._lock:
            self._busy_since = time.time()

    def record_busy(self, seconds: float) -> None:
        now = time.time()
        with self._lock:
            self._busy_since = None
            self._busy.append((now - seconds, now))
            self._last_active = now
            while self._busy and self._busy[0][1] < now - UTIL_WINDOW_S:
                self._busy.popleft()
            while self._work and self._work[0][0] < now - UTIL_WINDOW_S:
                self._work.popleft()

    def shares(self, now: float | None = None) -> tuple[float, float, bool]:
        """(busy share, compute share, active) over the last UTIL_WINDOW_S, the step in flight included."""
        now = time.time() if now is None else now
        lo = now - UTIL_WINDOW_S
        with self._lock:
            spans = list(self._busy) + ([(self._busy_since, now)] if self._busy_since is not None else [])
            busy = sum(max(0.0, min(e, now) - max(s, lo)) for s, e in spans)
            work = sum(c for e, c in self._work if e >= lo)
            active = self._busy_since is not None or self._last_active >= now - IDLE_HOLD_S
        return min(1.0, busy / UTIL_WINDOW_S), min(1.0, work / UTIL_WINDOW_S), active

    def utilisation(self) -> float:
        return self.shares()[0]

    def collect(self):
        """Prometheus collector: dcgm-exporter names, computed at scrape time."""
        s = self.refresh()
        util, work, active = self.shares()
        r = self.model.step(time.time(), s, util, work, active)
        fb = self.model.spec.fb_total_mib
        engine_mib = fb * ENGINE_FB_SHARE * (1.0 - s.mem_pool_fraction)
        used = min(fb, engine_mib + fb * s.mem_pool_fraction)
        values = {
            "DCGM_FI_DEV_SM_CLOCK": ("SM clock frequency (in MHz).", r.sm_clock_mhz),
            "DCGM_FI_DEV_MEM_CLOCK": ("Memory clock frequency (in MHz).", r.mem_clock_mhz),
            "DCGM_FI_DEV_GPU_TEMP": ("GPU temperature (in C).", r.temp_c),
            "DCGM_FI_DEV_POWER_USAGE": ("Power draw (in W).", r.power_w),
            "DCGM_FI_DEV_POWER_MGMT_LIMIT": ("Power management limit (in W).", s.enforced_limit()),
            "DCGM_FI_DEV_FB_USED": ("Framebuffer memory used (in MiB).", used),
            "DCGM_FI_DEV_FB_FREE": ("Framebuffer memory free (in MiB).", fb - used),
            "DCGM_FI_DEV_XID_ERRORS": ("Value of the last XID error encountered.", self.last_xid),
            "DCGM_FI_DEV_GPU_UTIL": ("GPU utilization (in %).", r.util_pct),
            "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": ("Current clock event reasons (bitmask).", r.reasons),
        }
        labels = ["gpu", "rank", "UUID", "modelName", "emulated", *self.labels]
        label_values = [str(self.index), self.rank, f"GPU-mini-{self.index}", self.model.spec.model_name, "true",
                        *self.labels.values()]
        for name, (doc, value) in values.items():
            fam = GaugeMetricFamily(name, doc + " [emulated]", labels=labels)
            fam.add_metric(label_values, float(value))
            yield fam
