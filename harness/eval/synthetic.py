"""Small synthetic cases in the case-directory format, for tests and the evaluation benchmark.

Seven components (ingress, node-0/1, rank-0..3 with ranks 0-1 on node-0), a few metrics each, one sample per
second. After the injection the target's key metric shifts by ``shift`` standard deviations and the ingress
latency rises a little (every fault slows requests); a clean case has no shift. Nothing here is a measurement:
these cases exist to check the evaluation machinery, and their ground truth is labelled "emulated".

``make_run`` and ``make_dataset`` write the run layout (``cases/<opaque id>/`` blind, ``labels/<id>/`` and
``labels.jsonl`` beside); ``make_case`` writes one older, self-contained case directory (labels inside).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from chaosbench.case import CaseWriter, GroundTruth, Topology, atomic_write_text
from chaosbench.faults.catalog import CATALOG

NODES = ("node-0", "node-1")
RANKS = ("rank-0", "rank-1", "rank-2", "rank-3")
RANK_NODE = {"rank-0": "node-0", "rank-1": "node-0", "rank-2": "node-1", "rank-3": "node-1"}
METRICS = {
    "ingress": ("latency", "ttft", "qps"),
    "node": ("cpu", "mem", "net_rx"),
    "rank": ("DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_FB_USED", "step_time"),
}
# the synthetic metrics a fault moves, and which way (a fault lowers clocks and power, raises the rest)
SHIFTS = {"DCGM_FI_DEV_SM_CLOCK": -1.0, "DCGM_FI_DEV_POWER_USAGE": -1.0, "DCGM_FI_DEV_FB_USED": 1.0,
          "cpu": 1.0, "mem": 1.0}


def _effects() -> dict[str, tuple[str, str, float]]:
    """fault id -> (target kind, metric that moves, direction): each shipped fault whose first key metric
    (FaultSpec.key_metrics) names one of the SHIFTS metrics of its target kind, in SHIFTS order."""
    found: dict[str, tuple[str, str, float]] = {}
    for spec in CATALOG:
        moved = [m for m in METRICS[spec.target] if m in SHIFTS and spec.key_metrics[:1]
                 and spec.key_metrics[0] in m.lower()]
        if moved:
            found[spec.id] = (spec.target, moved[0], SHIFTS[moved[0]])
    return dict(sorted(found.items(), key=lambda item: list(SHIFTS).index(item[1][1])))


EFFECTS = _effects()


def topology() -> Topology:
    comps = ("ingress", *NODES, *RANKS)
    return Topology("local", "mini", NODES, RANKS, dict(RANK_NODE), comps, emulated_device=True)


def _frame(rng: np.random.Generator, t0: int, seconds: int) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {"time": np.arange(t0, t0 + seconds, dtype=float)}
    for comp in ("ingress", *NODES, *RANKS):
        kind = "ingress" if comp == "ingress" else comp.split("-")[0]
        for metric in METRICS[kind]:
            cols[f"{comp}_{metric}"] = 100.0 + rng.normal(0.0, 1.0, seconds)
    return cols


def _requests(rng: np.random.Generator, t0: int, seconds: int, inject: float, slow: float) -> list[dict]:
    out = []
    for start in np.sort(rng.uniform(t0, t0 + seconds - 5, seconds * 2)):
        e2e = float(rng.gamma(20.0, 0.05)) * (slow if start >= inject else 1.0)
        out.append({"start": float(start), "ttft": e2e * 0.2, "itl": e2e / 40, "e2e": e2e, "tokens": 32, "status": 200})
    return out


def make_case(root: Path, name: str, fault_id: str | None, target: str | None, *, seed: int = 0,
              seconds: int = 300, inject_at: int = 200, shift: float = 8.0, status: str = "completed") -> Path:
    """Write one synthetic case under ``root/name``; ``fault_id`` None makes a clean run."""
    rng = np.random.default_rng(seed)
    t0 = 1_700_000_000 + seed * 1000
    inject = float(t0 + inject_at)
    cols = _frame(rng, t0, seconds)
    after = cols["time"] >= inject
    if fault_id is not None:
        _, metric, sign = EFFECTS[fault_id]
        cols[f"{target}_{metric}"][after] += sign * shift
        cols["ingress_latency"][after] += 3.0
    import pandas as pd

    w = CaseWriter(Path(root) / name)
    w.write_text("data.csv", pd.DataFrame(cols).to_csv(index=False))
    w.write_inject_time(inject)
    w.write_json("topology.json", topology().to_json())
    lines = [f'{t0 + i},{"rank-1" if i % 2 else "node-0"},INFO,step ok' for i in range(0, seconds, 7)]
    w.write_text("logs.csv", "time,component,level,message\n" + "\n".join(lines) + "\n")
    reqs = _requests(rng, t0, seconds, inject, 1.5 if fault_id else 1.0)
    w.write_text("load/requests.jsonl", "".join(json.dumps(r) + "\n" for r in reqs))
    w.write_ground_truth(_truth(fault_id, target, inject))
    w.event("load", "start")
    return w.finalize({"backend": "local", "engine": "mini", "seed": seed, "synthetic": True}, status)  # type: ignore[arg-type]


def _truth(fault_id: str | None, target: str | None, inject: float) -> GroundTruth:
    if fault_id is None:
        return GroundTruth(fault_id=None, fault_class=None, component=None, node=None, rank=None, start=None,
                           end=None, mechanism=None, realism=None, verified=True)
    kind = EFFECTS[fault_id][0]
    node = RANK_NODE.get(target or "", target) if kind == "rank" else target
    rank = int(target.split("-")[1]) if kind == "rank" and target else None
    return GroundTruth(fault_id=fault_id, fault_class="synthetic", component=target, node=node, rank=rank,
                       start=inject, end=inject + 60.0, mechanism="synthetic shift", realism="emulated", verified=True)


def make_run(root: Path, specs: list[dict[str, Any]]) -> Path:
    """A run directory: one case per spec (``fault_id``, ``target``, ``seed``, optional ``status``, ``split``,
    ``intensity``, ``shift``, ``reason``), each under an opaque random id; returns ``root``."""
    root = Path(root)
    records = []
    for index, spec in enumerate(specs):
        cid = secrets.token_hex(6)
        fault, target = spec.get("fault_id"), spec.get("target")
        status = spec.get("status", "completed")
        path = make_case(root / "cases", cid, fault, target, seed=spec.get("seed", index),
                         shift=spec.get("shift", 8.0), status=status)
        truth = json.loads((root / "labels" / cid / "ground_truth.json").read_text())
        kind = EFFECTS[fault][0] if fault else None
        records.append({"case_id": cid, "index": index, "split": spec.get("split", "dev" if index % 2 else "test"),
                        "status": status, "reason": spec.get("reason"), "ground_truth": truth,
                        "faults": [] if fault is None else [{"id": fault, "target": target, "params": {},
                                                             "start": truth["start"], "duration": 60.0}],
                        "intensity": spec.get("intensity"), "target_kind": kind, "topology": "2x2"})
        assert path.parent.name == "cases"
    atomic_write_text(root / "labels.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return root


def dataset_specs(n: int, *, clean_every: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` cases cycling over the faults and valid targets; every ``clean_every``-th is a clean run."""
    faults = list(EFFECTS)
    specs: list[dict[str, Any]] = []
    for i in range(n):
        if clean_every and i % clean_every == clean_every - 1:
            specs.append({"fault_id": None, "target": None, "seed": seed + i})
            continue
        fault = faults[i % len(faults)]
        pool = RANKS if EFFECTS[fault][0] == "rank" else NODES
        specs.append({"fault_id": fault, "target": pool[(i // len(faults)) % len(pool)], "seed": seed + i})
    return specs


def make_dataset(root: Path, n: int, *, clean_every: int = 0, seed: int = 0) -> list[Path]:
    """A run of ``n`` synthetic cases (``dataset_specs``) under ``root``; returns the case directories in order."""
    make_run(root, dataset_specs(n, clean_every=clean_every, seed=seed))
    ids = [json.loads(line)["case_id"] for line in (Path(root) / "labels.jsonl").read_text().splitlines()]
    return [Path(root) / "cases" / cid for cid in ids]
