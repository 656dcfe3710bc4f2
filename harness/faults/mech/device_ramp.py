"""Grow one field of a device control file from ``--start`` to ``--end`` over ``--duration`` seconds.

Used by gpu-memory-pressure in ``growing`` mode (a helper that allocates more and more device memory).
Run: ``python -m chaosbench.faults.mech.device_ramp --control rank-2.json --field mem_pool_fraction --start 0.2
--end 0.8 --duration 30``; it keeps the end value once reached and exits.
"""

from __future__ import annotations

import argparse
import time

from chaosbench.faults.mech.device import apply

STEP_S = 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description="device control ramp")
    ap.add_argument("--control", required=True)
    ap.add_argument("--field", required=True)
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--end", type=float, required=True)
    ap.add_argument("--duration", type=float, required=True)
    a = ap.parse_args()
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < a.duration:
        time.sleep(STEP_S)
        share = min(1.0, (elapsed + STEP_S) / a.duration)
        apply(a.control, {a.field: round(a.start + (a.end - a.start) * share, 4)})


if __name__ == "__main__":
    main()
