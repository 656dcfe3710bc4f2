"""The emulated GPU (chaosbench.engines.mini.device.GpuModel, an H100 SXM5) driven by a rank's recorded work.

    .venv/bin/python benchmarks/bench_device.py                                   # the real fixture, two loads
    .venv/bin/python benchmarks/bench_device.py --trace RUN/cases/ID/traces/rank-0.json.gz --seconds 600

The rank's real work comes from a recorded Kineto trace of the mini engine: its ``engine.step`` ranges are the
busy time (a step in flight keeps a kernel resident), its ``attention``/``mlp`` ranges minus the all-reduces
inside them the compute time. Two load levels: the recording as it ran ("loaded"), and the same steps spread
over three times the wall time ("light": a third of the request rate). The recording is looped to ``--seconds``
so the temperature can settle; the model is read once a second, as Prometheus scrapes it. The loaded level is
also run under a 200 W power cap and a 600 MHz clock lock. Writes ``device.png`` and ``device.json`` to --out
and prints per-level means and standard deviations of the last half.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chaosbench.engines.mini.device import DeviceState, GpuModel

FIXTURE = REPO / "tests" / "fixtures" / "real" / "clean-core" / "traces" / "rank-0.json.gz"
Span = tuple[float, float]


def recorded_work(path: Path) -> tuple[list[Span], list[Span], float]:
    """(busy spans, compute spans, recording length), seconds from the recording's start."""
    if path.suffix == ".gz":
        with gzip.open(path) as fh:
            raw = json.loads(fh.read())
    else:
        raw = json.loads(path.read_text())
    events = [e for e in (raw["traceEvents"] if isinstance(raw, dict) else raw) if e.get("ph") == "X"]
    steps = [e for e in events if e.get("name") == "engine.step"]
    if not steps:
        raise SystemExit(f"{path}: no engine.step ranges (not a mini-engine trace)")
    t0 = min(e["ts"] for e in steps)
    span = (max(e["ts"] + e["dur"] for e in steps) - t0) / 1e6

    def rel(e: dict) -> Span:
        return (e["ts"] - t0) / 1e6, (e["ts"] + e["dur"] - t0) / 1e6

    main_tid = steps[0].get("tid")
    reduces = sorted(rel(e) for e in events if e.get("name") == "allreduce" and e.get("tid") == main_tid)
    compute = []
    for e in events:
        if e.get("name") in ("attention", "mlp") and e.get("tid") == main_tid:
            s, end = rel(e)
            inner = [r for r in reduces if r[0] >= s and r[1] <= end]
            compute.append((s, inner[0][0] if inner else end))  # the compute precedes its all-reduce
    return [rel(e) for e in steps], compute, span


def overlap(spans: list[Span], lo: float, hi: float) -> float:
    return sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in spans)


def drive(busy: list[Span], work: list[Span], span: float, stretch: float, seconds: int, state: DeviceState,
          seed: int) -> list[dict]:
    """One reading per second; the recording (time-stretched by ``stretch``) loops over ``seconds``."""
    period = span * stretch
    b = [(s * stretch, s * stretch + (e - s)) for s, e in busy]
    w = [(s * stretch, s * stretch + (e - s)) for s, e in work]
    model, out = GpuModel(seed=seed), []
    for t in range(1, seconds + 1):
        lo, hi = (t - 1) % period, (t - 1) % period + 1.0
        util = (overlap(b, lo, hi) + overlap(b, lo - period, hi - period)) / 1.0
        comp = overlap(w, lo, hi) + overlap(w, lo - period, hi - period)
        r = model.step(float(t), state, util, comp, util > 0)
        out.append({"t": t, "util": r.util_pct, "sm_clock": r.sm_clock_mhz, "mem_clock": r.mem_clock_mhz,
                    "power": r.power_w, "temp": r.temp_c, "reasons": r.reasons})
    return out


def summary(rows: list[dict]) -> dict[str, tuple[float, float]]:
    half = rows[len(rows) // 2:]
    return {k: (round(statistics.mean(r[k] for r in half), 1), round(statistics.pstdev(r[k] for r in half), 2))
            for k in ("util", "sm_clock", "power", "temp")}


def plot(levels: dict[str, list[dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("util", "GPU_UTIL (%)"), ("sm_clock", "SM_CLOCK (MHz)"), ("power", "POWER_USAGE (W)"),
            ("temp", "GPU_TEMP (C)")]
    fig, axes = plt.subplots(len(keys), 1, figsize=(10, 9), sharex=True)
    for ax, (k, label) in zip(axes, keys, strict=True):
        for name, rows in levels.items():
            ax.plot([r["t"] for r in rows], [r[k] for r in rows], label=name, linewidth=0.8)
        ax.set_ylabel(label)
    axes[0].legend(loc="lower right", fontsize=8)
    axes[-1].set_xlabel("seconds")
    fig.suptitle("emulated H100 SXM5 driven by a recorded mini-engine rank")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, default=FIXTURE)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_device"))
    args = ap.parse_args(argv)
    if not args.trace.is_file():
        raise SystemExit(f"{args.trace}: no such trace file")
    busy, work, span = recorded_work(args.trace)
    levels = {
        "loaded": drive(busy, work, span, 1.0, args.seconds, DeviceState(), 1),
        "light (1/3 rate)": drive(busy, work, span, 3.0, args.seconds, DeviceState(), 2),
        "loaded, 200 W cap": drive(busy, work, span, 1.0, args.seconds, DeviceState(power_limit_w=200), 3),
        "loaded, 600 MHz lock": drive(busy, work, span, 1.0, args.seconds, DeviceState(sm_clock_mhz=600), 4),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot(levels, args.out / "device.png")
    result = {name: {"mean_std_last_half": summary(rows), "power_cap_bit_share":
                     round(sum(bool(r["reasons"] & 0x4) for r in rows) / len(rows), 3)} for name, rows in levels.items()}
    (args.out / "device.json").write_text(json.dumps({"trace": str(args.trace), "recording_s": round(span, 1),
                                                      "levels": result, "series": levels}))
    print(f"recording {args.trace} ({span:.1f} s, {len(busy)} steps), looped to {args.seconds} s")
    print(f"{'level':24} {'util %':>14} {'SM clock MHz':>16} {'power W':>14} {'temp C':>12} {'cap bit':>8}")
    for name, res in result.items():
        s = res["mean_std_last_half"]
        cells = " ".join(f"{s[k][0]:>8} ±{s[k][1]:<5}" for k in ("util", "sm_clock", "power", "temp"))
        print(f"{name:24} {cells} {res['power_cap_bit_share']:>8}")
    print(f"plot: {args.out / 'device.png'}")


if __name__ == "__main__":
    main()
