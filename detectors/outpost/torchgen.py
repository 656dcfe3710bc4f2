"""Real torch.profiler traces from gloo ranks on this machine, optionally with one slowed rank.

Each rank runs a small tensor-parallel-shaped loop under torch.profiler (CPU activity):
``engine.step`` > ``model.forward`` > ``layer.<i>`` > ``attention`` / ``mlp`` / ``allreduce``
(a real ``dist.all_reduce`` over gloo on loopback), and writes ``rank-<i>.json.gz`` (Kineto JSON,
``process_name`` = ``rank-<i>``). From ``fault_step`` on, a slowed rank runs the same mlp ops
(same names, same tree, same output shape) on an inner dimension ``factor`` times wider, so each
matmul and gelu takes about ``factor`` times longer, as on a throttled device. (Repeating the
ops instead would add events but slow none: Outpost scores each event's self time.) ``meta.txt`` records the
split (the fault step's start, in the trace's own microseconds) for the intra-worker history.

    .venv/bin/python -m chaosbench.detectors.outpost.torchgen OUT_DIR [--ranks 2] [--steps 40]
        [--slow-rank 1] [--factor 3] [--fault-step 20]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str, args: dict) -> None:
    import torch
    import torch.distributed as dist
    from torch.profiler import ProfilerActivity, profile, record_function

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    gen = torch.Generator().manual_seed(rank)
    hidden = args["hidden"]
    w1 = torch.randn(hidden, 2 * hidden, generator=gen)
    w2 = torch.randn(2 * hidden, hidden, generator=gen)
    w1_slow = torch.randn(hidden, 2 * hidden * args["factor"], generator=gen)  # same ops, factor x the work
    w2_slow = torch.randn(2 * hidden * args["factor"], hidden, generator=gen)
    wq = torch.randn(hidden, hidden, generator=gen)
    x = torch.randn(8, hidden, generator=gen)
    starts = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in range(args["steps"]):
            slow = rank == args["slow_rank"] and step >= args["fault_step"]
            with record_function("engine.step"):
                starts.append(None)
                with record_function("model.forward"):
                    h = x
                    for layer in range(args["layers"]):
                        with record_function(f"layer.{layer}"):
                            with record_function("attention"):
                                a = torch.softmax(h @ wq, dim=-1) @ wq
                            with record_function("mlp"):
                                u, v = (w1_slow, w2_slow) if slow else (w1, w2)
                                m = torch.nn.functional.gelu(a @ u) @ v
                            with record_function("allreduce"):
                                dist.all_reduce(m)
                            h = torch.tanh(m / (world * hidden))
    raw = Path(out) / f".rank-{rank}.raw.json"
    prof.export_chrome_trace(str(raw))
    doc = json.loads(raw.read_text())
    raw.unlink()
    events = [e for e in doc["traceEvents"] if not (e.get("ph") == "M" and e.get("name") == "process_name")]
    pids = {e["pid"] for e in events if isinstance(e.get("pid"), int)}
    events += [{"ph": "M", "name": "process_name", "pid": p, "tid": 0, "args": {"name": f"rank-{rank}"}} for p in pids]
    doc["traceEvents"] = events
    with gzip.open(Path(out) / f"rank-{rank}.json.gz", "wt", compresslevel=3) as fh:
        json.dump(doc, fh)
    dist.destroy_process_group()


def generate(out: Path, ranks: int = 2, steps: int = 40, layers: int = 4, hidden: int = 256,
             slow_rank: int | None = None, factor: int = 3, fault_step: int = 20) -> dict:
    """Run the ranks (torch.multiprocessing, spawn) and write traces + meta.txt into ``out``."""
    import torch.multiprocessing as mp

    out.mkdir(parents=True, exist_ok=True)
    args = {"steps": steps, "layers": layers, "hidden": hidden, "slow_rank": -1 if slow_rank is None else slow_rank,
            "factor": factor, "fault_step": fault_step}
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.start_processes(_rank_main, args=(ranks, _free_port(), str(out), args), nprocs=ranks, join=True,
                       start_method="spawn")
    split = _split_us(out / "rank-0.json.gz", fault_step)
    meta = {"ranks": ranks, "steps": steps, "slow_rank": slow_rank, "factor": factor, "fault_step": fault_step,
            "split_us": split}
    (out / "meta.txt").write_text(json.dumps(meta))
    return meta


def _split_us(path: Path, fault_step: int) -> float:
    with gzip.open(path, "rt") as fh:
        doc = json.load(fh)
    steps = sorted(e["ts"] for e in doc["traceEvents"] if e.get("name") == "engine.step" and e.get("ph") == "X")
    return float(steps[min(fault_step, len(steps) - 1)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, nargs="?", default=Path(tempfile.mkdtemp(prefix="cb-torch-traces-")))
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--slow-rank", type=int, default=None)
    ap.add_argument("--factor", type=int, default=3)
    ap.add_argument("--fault-step", type=int, default=20)
    a = ap.parse_args()
    meta = generate(a.out, a.ranks, a.steps, a.layers, slow_rank=a.slow_rank, factor=a.factor, fault_step=a.fault_step)
    print(json.dumps({"out": str(a.out), **meta}))


if __name__ == "__main__":
    main()
