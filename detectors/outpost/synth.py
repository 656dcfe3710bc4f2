"""Generated multi-rank Kineto-like traces with injected slowdowns, plus their ground truth.

The layout mimics the mini engine's traces: per rank, a main thread with
``engine.step`` (``args.step``) > ``model.forward`` > ``layer.<i>`` > ``attention`` /
``mlp`` / ``allreduce`` with ``aten::`` leaves, and a comm thread with one
``gloo:all_reduce`` per layer. Ranks run in lockstep: every layer ends with an
allreduce that completes when the slowest rank arrives, so a slowed rank makes the
others wait (longer ``allreduce`` events on the healthy ranks), as in real tensor
parallelism. Noise is multiplicative (lognormal), per op and per step (batch size).

``write_case`` writes a case directory (manifest, topology, inject_time, traces/,
ground_truth.json) so generated traces go through the same CaseView path as real
cases; the truth lies outside what a detector reads.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

ATTN_OPS = ("aten::linear", "aten::matmul", "aten::softmax", "aten::linear")
MLP_OPS = ("aten::linear", "aten::gelu", "aten::linear")
ATTN_US = np.array([60.0, 40.0, 15.0, 60.0])
MLP_US = np.array([120.0, 20.0, 120.0])
COMM_US = 30.0
GAP_US = 2.0
T0_US = 1_790_000_000_000_000.0  # unix-epoch microseconds, as in case traces


@dataclass(frozen=True)
class Slowdown:
    """Multiply the compute ops of ``ranks`` by ``factor`` in steps [first, last]."""

    ranks: tuple[int, ...]
    factor: float
    first: int
    last: int
    ops: str = "mlp"  # "mlp", "attention" or "all"


@dataclass(frozen=True)
class SynthSpec:
    ranks: int = 4
    steps: int = 40
    layers: int = 4
    noise: float = 0.05  # lognormal sigma per op
    batch_noise: float = 0.05  # lognormal sigma per step, shared by all ranks
    seed: int = 0
    slowdowns: tuple[Slowdown, ...] = ()
    inject_step: int | None = None  # clean runs: nominal split; default = first slowed step or steps//2
    pid_base: int = 4000
    events_per_file: bool = True  # one file per rank (else one file with every rank)
    fault_id: str = "synthetic-slowdown"  # the truth's fault id (per-kind breakdowns in the sweep)
    extra: dict = field(default_factory=dict)

    def split_step(self) -> int:
        if self.inject_step is not None:
            return self.inject_step
        if self.slowdowns:
            return min(s.first for s in self.slowdowns)
        return self.steps // 2


def _factors(spec: SynthSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-op durations (steps, ranks, layers, ops) for attention and mlp."""
    shape = (spec.steps, spec.ranks, spec.layers)
    batch = rng.lognormal(0.0, spec.batch_noise, size=(spec.steps, 1, 1, 1)) if spec.batch_noise else 1.0
    attn = ATTN_US * batch * rng.lognormal(0.0, spec.noise, size=(*shape, len(ATTN_US)))
    mlp = MLP_US * batch * rng.lognormal(0.0, spec.noise, size=(*shape, len(MLP_US)))
    for s in spec.slowdowns:
        sl = (slice(s.first, s.last + 1), list(s.ranks))
        if s.ops in ("mlp", "all"):
            mlp[sl] *= s.factor
        if s.ops in ("attention", "all"):
            attn[sl] *= s.factor
    return attn, mlp


def _x(name: str, ts: float, dur: float, pid: int, tid: int, cat: str = "cpu_op", args: dict | None = None) -> dict:
    ev = {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid,
          "ts": round(float(ts), 3), "dur": round(float(dur), 3)}
    if args:
        ev["args"] = args
    return ev


def _block(events: list, name: str, ops: tuple[str, ...], durs: np.ndarray, t: float, pid: int) -> float:
    """A record_function block with sequential aten leaves; returns its end time."""
    start = t
    t += GAP_US
    leaves = []
    for op, d in zip(ops, durs):
        leaves.append(_x(op, t, float(d), pid, pid))
        t += float(d) + GAP_US
    events.append(_x(name, start, t - start, pid, pid, cat="user_annotation"))
    events.extend(leaves)
    return t


def generate(spec: SynthSpec) -> dict[int, list[dict]]:
    """Events per rank (Chrome 'X' events + process/thread metadata)."""
    rng = np.random.default_rng(spec.seed)
    attn, mlp = _factors(spec, rng)
    events: dict[int, list[dict]] = {}
    for r in range(spec.ranks):
        pid = spec.pid_base + r
        events[r] = [
            {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": f"rank-{r}"}},
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": pid, "args": {"name": "MainThread"}},
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": pid + 1, "args": {"name": "gloo"}},
        ]
    skew = rng.uniform(0.0, 3.0, size=spec.ranks)
    t = T0_US
    for k in range(spec.steps):
        step_start = t
        t += 5.0
        bodies: list[list[dict]] = [[] for _ in range(spec.ranks)]
        for layer in range(spec.layers):
            arrive = np.empty(spec.ranks)
            layer_parts = []
            for r in range(spec.ranks):
                pid = spec.pid_base + r
                part: list[dict] = []
                t1 = _block(part, "attention", ATTN_OPS, attn[k, r, layer], t + GAP_US + skew[r], pid)
                arrive[r] = _block(part, "mlp", MLP_OPS, mlp[k, r, layer], t1, pid)
                layer_parts.append(part)
            done = float(arrive.max()) + COMM_US
            for r in range(spec.ranks):
                pid = spec.pid_base + r
                a = float(arrive[r])
                layer_ev = _x(f"layer.{layer}", t + skew[r], done + GAP_US - t - skew[r], pid, pid, "user_annotation")
                ar = _x("allreduce", a, done - a, pid, pid, "user_annotation")
                c10d = _x("c10d::allreduce_", a + 0.5, done - a - 1.0, pid, pid)
                gloo = _x("gloo:all_reduce", a + 1.0, done - a - 1.5, pid, pid + 1)
                bodies[r].extend([layer_ev, *layer_parts[r], ar, c10d, gloo])
            t = done + 2 * GAP_US
        t += 20.0
        for r in range(spec.ranks):
            pid = spec.pid_base + r
            s = step_start + skew[r]
            events[r].append(_x("engine.step", s, t - s, pid, pid, "user_annotation", {"step": k}))
            events[r].append(_x("model.forward", s + 1.0, t - s - 10.0, pid, pid, "user_annotation"))
            events[r].extend(bodies[r])
        t += 50.0
    return events


def step_windows(spec: SynthSpec) -> list[tuple[float, float]]:
    """(start, end) unix seconds of every step, rebuilt from a generation (same seed)."""
    per_rank = generate(spec)
    steps = [e for e in per_rank[0] if e.get("name") == "engine.step"]
    return [(e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6) for e in steps]


def truth_for(spec: SynthSpec, windows: list[tuple[float, float]]) -> dict:
    """A GroundTruth-shaped dict, plus ``components`` and ``windows`` for multi-rank/partial faults."""
    split = windows[min(spec.split_step(), len(windows) - 1)][0]
    if not spec.slowdowns:
        return {"fault_id": None, "fault_class": None, "component": None, "node": None, "rank": None,
                "start": None, "end": None, "mechanism": None, "realism": None, "verified": True,
                "components": [], "windows": [], "inject_time": split}
    comps = sorted({f"rank-{r}" for s in spec.slowdowns for r in s.ranks})
    wins = [[windows[s.first][0], windows[s.last][1]] for s in spec.slowdowns]
    first = min(s.ranks[0] for s in spec.slowdowns)
    return {"fault_id": spec.fault_id, "fault_class": "compute", "component": f"rank-{first}",
            "node": None, "rank": first, "start": min(w[0] for w in wins), "end": max(w[1] for w in wins),
            "mechanism": "generated", "realism": "emulated", "verified": True,
            "components": comps, "windows": wins, "inject_time": split}


def write_traces(spec: SynthSpec, out_dir: Path, gz: bool = True) -> list[Path]:
    """Write one Chrome JSON (dict form) per rank, or one file with every rank."""
    out_dir.mkdir(parents=True, exist_ok=True)
    per_rank = generate(spec)
    suffix = ".json.gz" if gz else ".json"
    groups = {f"rank-{r}": ev for r, ev in per_rank.items()} if spec.events_per_file else {
        "all-ranks": [e for ev in per_rank.values() for e in ev]}
    paths = []
    for stem, evs in groups.items():
        info = {"rank": int(stem.split("-")[1])} if spec.events_per_file else {}
        data = orjson.dumps({"schemaVersion": 1, "distributedInfo": info, "traceEvents": evs})
        path = out_dir / f"{stem}{suffix}"
        path.write_bytes(gzip.compress(data, compresslevel=1) if gz else data)
        paths.append(path)
    return paths


def write_case(spec: SynthSpec, case_dir: Path) -> dict:
    """A minimal case directory for ``spec``; returns its ground truth."""
    case_dir.mkdir(parents=True, exist_ok=True)
    write_traces(spec, case_dir / "traces")
    truth = truth_for(spec, step_windows(spec))
    ranks = [f"rank-{r}" for r in range(spec.ranks)]
    topo = {"backend": "synthetic", "engine": "synth", "nodes": ["node-0"], "ranks": ranks,
            "rank_node": {r: "node-0" for r in ranks}, "components": ranks, "emulated_device": True}
    (case_dir / "topology.json").write_text(json.dumps(topo))
    (case_dir / "inject_time.txt").write_text(f"{truth['inject_time']:.6f}\n")
    (case_dir / "ground_truth.json").write_text(json.dumps(truth))
    (case_dir / "manifest.json").write_text(json.dumps({"generator": "chaosbench.detectors.outpost.synth", "seed": spec.seed}))
    return truth
