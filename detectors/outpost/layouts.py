"""Generated GPU-style traces of data-, pipeline- and tensor-parallel training, with known answers.

Layout: ``dp`` replicas x ``pp`` stages x ``tp`` ranks; rank = (d * pp + s) * tp + t, node = rank //
``ranks_per_node``. Each rank writes a Kineto-like ``rank-<i>.json.gz``:

- a CPU process (a random OS pid; the main thread's tid is the pid, as in Linux) with ``ProfilerStep#k`` >
  ``forward``/``backward`` per microbatch > ``aten::`` ops > ``cudaLaunchKernel``, the p2p launches
  (``nccl:recv``/``nccl:send``), and a ``cudaDeviceSynchronize`` that blocks until the GPU is done;
- a GPU process (pid = device index) with a compute stream (id 7) and one stream per communicator, as
  PyTorch gives each NCCL communicator its own stream: p2p with the previous stage, p2p with the next
  stage, tensor-parallel and data-parallel all-reduce; their ids differ on every rank.

The schedule is GPipe: each stage runs the forward of every microbatch, then every backward. A stage's
forward (backward) waits for the previous (next) stage's activation (gradient): the receive kernel spans
from when the receiver posts it to when the sender's data arrives, the send kernel from when the sender
posts it to the same end. With ``tp`` > 1 every layer ends with an all-reduce (the compute stream resumes
when the slowest tp rank arrives). After the backward, a stage's gradients are all-reduced over the
replicas of the same (stage, tp rank), then an optimizer kernel runs. The first stage has an embedding
and the last a head and a loss, so stages differ in their kernels, as in real pipelines.

A ``Slow`` rank's compute-stream kernels take ``factor`` times longer from ``first_step`` on; the waits of
the others grow by themselves. ``write_case`` writes a case directory with the answer outside what a
detector reads.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

T0_US = 1_790_000_000_000_000.0
FWD = (("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_64x3_tn", 120.0),
       ("void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4> >(Flash_fwd_params)", 80.0),
       ("ampere_bf16_s16816gemm_bf16_256x128_ldg8_f2f_stages_64x3_nn", 120.0),
       ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", 25.0))
BWD = (("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_64x3_nt", 240.0),
       ("void flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits>(Flash_bwd_params)", 160.0),
       ("ampere_bf16_s16816gemm_bf16_256x128_ldg8_f2f_stages_64x3_tn", 240.0),
       ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluBackwardCUDAKernelImpl>", 40.0))
FIRST_FWD = (("void at::native::indexSelectLargeIndex<c10::BFloat16, long, unsigned int, 2, 2, -2, true>", 30.0),)
FIRST_BWD = (("void at::native::embedding_backward_feature_kernel<c10::BFloat16, float, long>", 45.0),)
LAST_FWD = (("ampere_bf16_s16816gemm_bf16_256x128_ldg8_f2f_stages_64x3_tn_lm_head", 150.0),
            ("void at::native::cunn_SoftMaxForward<4, c10::BFloat16, float, float>", 40.0))
LAST_BWD = (("void at::native::cunn_SoftMaxBackward<4, c10::BFloat16, float, float>", 40.0),
            ("ampere_bf16_s16816gemm_bf16_256x128_ldg8_f2f_stages_64x3_nt_lm_head", 300.0))
SENDRECV = "ncclDevKernel_SendRecv(ncclDevComm*, unsigned long, ncclWork*)"
TP_ALLREDUCE = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)"
DP_ALLREDUCE = "ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevComm*, unsigned long, ncclWork*)"
OPTIMIZER = "void multi_tensor_apply_kernel<TensorListMetadata<4>, AdamFunctor<float>, float>"
XFER_US, TP_AR_US, DP_AR_US, OPT_US = 20.0, 30.0, 200.0, 100.0
LAUNCH_US, GAP_US = 12.0, 2.0
COMPUTE_STREAM = 7


@dataclass(frozen=True)
class Slow:
    """Multiply the compute-stream kernels of ``ranks`` by ``factor`` from ``first_step`` on."""

    ranks: tuple[int, ...]
    factor: float
    first_step: int = 0


@dataclass(frozen=True)
class Layout:
    dp: int = 4
    pp: int = 4
    tp: int = 1
    steps: int = 24
    micro: int = 4
    layers: int = 2  # per stage
    ranks_per_node: int = 4
    noise: float = 0.03  # lognormal sigma per kernel
    batch_noise: float = 0.02  # per step, shared by every rank
    seed: int = 0
    slow: tuple[Slow, ...] = ()
    split_step: int | None = None  # the injection (default: the first slowed step, else steps // 2)

    @property
    def world(self) -> int:
        return self.dp * self.pp * self.tp

    def rank(self, d: int, s: int, t: int) -> int:
        return (d * self.pp + s) * self.tp + t

    def node(self, rank: int) -> str:
        return f"node-{rank // self.ranks_per_node}"

    def split(self) -> int:
        if self.split_step is not None:
            return self.split_step
        firsts = [s.first_step for s in self.slow if s.first_step > 0]
        return min(firsts) if firsts else self.steps // 2


def _x(name: str, ts: float, dur: float, pid: int, tid: int, cat: str) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": round(float(ts), 3),
            "dur": round(float(dur), 3)}


class _Sim:
    """Per-rank stream clocks and event lists while the schedule is played."""

    def __init__(self, lay: Layout) -> None:
        self.lay = lay
        rng = np.random.default_rng(lay.seed)
        self.rng = rng
        n = lay.world
        self.pid = [int(p) for p in rng.choice(np.arange(20_000, 60_000), size=n, replace=False)]
        self.dev = [r % lay.ranks_per_node for r in range(n)]
        ids = [int(x) for x in rng.permutation(np.arange(13, 13 + 4 * n))]  # comm stream ids, all distinct
        self.stream = {r: {"prev": ids[4 * r], "next": ids[4 * r + 1], "tp": ids[4 * r + 2], "dp": ids[4 * r + 3]}
                       for r in range(n)}
        self.gpu = np.full(n, T0_US)
        self.comm = {r: {k: T0_US for k in ("prev", "next", "tp", "dp")} for r in range(n)}
        self.cpu = np.full(n, T0_US)
        self.events: dict[int, list[dict]] = {r: self._meta(r) for r in range(n)}
        self.factor = np.ones(n)
        self.batch = 1.0

    def _meta(self, r: int) -> list[dict]:
        pid, dev = self.pid[r], self.dev[r]
        meta = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": "python3"}},
                {"ph": "M", "name": "thread_name", "pid": pid, "tid": pid, "args": {"name": f"thread {pid} (python3)"}},
                {"ph": "M", "name": "process_name", "pid": dev, "tid": 0, "args": {"name": f"GPU {dev}"}},
                {"ph": "M", "name": "thread_name", "pid": dev, "tid": COMPUTE_STREAM,
                 "args": {"name": f"stream {COMPUTE_STREAM}"}}]
        meta += [{"ph": "M", "name": "thread_name", "pid": dev, "tid": sid, "args": {"name": f"stream {sid}"}}
                 for sid in self.stream[r].values()]
        return meta

    def kernels(self, r: int, ops: tuple[tuple[str, float], ...], start: float) -> float:
        t = max(start, self.gpu[r])
        durs = np.array([d for _, d in ops]) * self.batch * self.factor[r]
        durs = durs * self.rng.lognormal(0.0, self.lay.noise, size=len(ops))
        for (name, _), d in zip(ops, durs):
            self.events[r].append(_x(name, t, float(d), self.dev[r], COMPUTE_STREAM, "kernel"))
            t += float(d) + GAP_US
        self.gpu[r] = t
        return t

    def comm_kernel(self, r: int, stream: str, name: str, start: float, end: float) -> None:
        self.events[r].append(_x(name, start, end - start, self.dev[r], self.stream[r][stream], "kernel"))
        self.comm[r][stream] = end

    def p2p(self, sender: int, s_stream: str, ready: float, receiver: int, r_stream: str) -> float:
        """A transfer: the receiver posts its receive when its compute stream is free; both kernels end
        when the data has arrived (the later post + the transfer time). Returns that end."""
        send_post = max(ready, self.comm[sender][s_stream])
        recv_post = max(self.gpu[receiver], self.comm[receiver][r_stream])
        end = max(send_post, recv_post) + XFER_US
        self.comm_kernel(sender, s_stream, SENDRECV, send_post, end)
        self.comm_kernel(receiver, r_stream, SENDRECV, recv_post, end)
        return end

    def layer_group(self, ranks: list[int], ops: tuple[tuple[str, float], ...], start: dict[int, float]) -> None:
        """One layer on every tp rank of a stage, ending with the tp all-reduce."""
        arrive = {r: self.kernels(r, ops, start[r]) for r in ranks}
        if len(ranks) == 1:
            return
        end = max(arrive.values()) + TP_AR_US
        for r in ranks:
            self.comm_kernel(r, "tp", TP_ALLREDUCE, max(arrive[r], self.comm[r]["tp"]), end)
            self.gpu[r] = end


def _pass(sim: _Sim, lay: Layout, forward: bool) -> None:
    """Every microbatch's forward (stages in order) or backward (stages in reverse) of one step."""
    stages = range(lay.pp) if forward else range(lay.pp - 1, -1, -1)
    done: dict[tuple[int, int, int, int], float] = {}
    for s in stages:
        src = s - 1 if forward else s + 1
        ops = FWD if forward else BWD
        extra = (FIRST_FWD if forward else FIRST_BWD) if s == 0 else ()
        if s == lay.pp - 1:
            extra = extra + (LAST_FWD if forward else LAST_BWD)
        for j in range(lay.micro):
            for d in range(lay.dp):
                ranks = [lay.rank(d, s, t) for t in range(lay.tp)]
                start = {}
                for t, r in enumerate(ranks):
                    if 0 <= src < lay.pp:  # forward: from the previous stage's "next" stream; backward: reverse
                        sender = lay.rank(d, src, t)
                        start[r] = sim.p2p(sender, "next" if forward else "prev", done[(d, src, j, t)],
                                           r, "prev" if forward else "next")
                    else:
                        start[r] = sim.gpu[r]
                for layer in range(lay.layers):
                    first = layer == 0
                    layer_ops = (extra + ops) if first and forward else ops
                    if not forward and layer == lay.layers - 1:
                        layer_ops = ops + extra
                    sim.layer_group(ranks, layer_ops, start)
                    start = {r: sim.gpu[r] for r in ranks}
                for t, r in enumerate(ranks):
                    done[(d, s, j, t)] = sim.gpu[r]


def _cpu_step(sim: _Sim, lay: Layout, r: int, k: int, start: float) -> float:
    """The CPU side of one step: launches, then a device synchronisation until the GPU is done."""
    pid, ev = sim.pid[r], sim.events[r]
    s = (r // lay.tp) % lay.pp
    t = start + 5.0
    children: list[dict] = []
    for phase in ("forward", "backward"):
        for _ in range(lay.micro):
            p0 = t
            if (phase == "forward" and s > 0) or (phase == "backward" and s < lay.pp - 1):
                children.append(_x("nccl:recv", t, 8.0, pid, pid, "user_annotation"))
                t += 10.0
            for _ in range(lay.layers):
                for op in ("aten::linear", "aten::scaled_dot_product_attention", "aten::linear", "aten::gelu"):
                    children.append(_x(op, t, LAUNCH_US, pid, pid, "cpu_op"))
                    children.append(_x("cudaLaunchKernel", t + 3.0, LAUNCH_US - 5.0, pid, pid, "cuda_runtime"))
                    t += LAUNCH_US + 1.0
            if (phase == "forward" and s < lay.pp - 1) or (phase == "backward" and s > 0):
                children.append(_x("nccl:send", t, 8.0, pid, pid, "user_annotation"))
                t += 10.0
            children.append(_x(phase, p0, t - p0, pid, pid, "user_annotation"))
            t += 2.0
    children.append(_x("c10d::allreduce_", t, 10.0, pid, pid, "cpu_op"))
    t += 12.0
    children.append(_x("Optimizer.step#AdamW.step", t, 30.0, pid, pid, "cpu_op"))
    t += 32.0
    sync_end = max(t + 5.0, float(sim.gpu[r]) + 3.0)
    children.append(_x("cudaDeviceSynchronize", t, sync_end - t, pid, pid, "cuda_runtime"))
    end = sync_end + 5.0
    ev.append(_x(f"ProfilerStep#{k}", start, end - start, pid, pid, "user_annotation"))
    ev.extend(children)
    return end


def generate(lay: Layout) -> tuple[dict[int, list[dict]], list[float]]:
    """Events per rank, and the start (unix s) of every step (rank 0's ``ProfilerStep``)."""
    sim = _Sim(lay)
    starts = []
    for k in range(lay.steps):
        sim.batch = float(sim.rng.lognormal(0.0, lay.batch_noise)) if lay.batch_noise else 1.0
        sim.factor = np.ones(lay.world)
        for sl in lay.slow:
            if k >= sl.first_step:
                sim.factor[list(sl.ranks)] *= sl.factor
        step_start = sim.cpu.copy()
        starts.append(float(step_start[0]) / 1e6)
        sim.gpu = np.maximum(sim.gpu, step_start + 60.0)  # the first kernel waits for its launch
        _pass(sim, lay, forward=True)
        _pass(sim, lay, forward=False)
        for s in range(lay.pp):  # gradients: all-reduce over the replicas of each (stage, tp rank)
            for t in range(lay.tp):
                ranks = [lay.rank(d, s, t) for d in range(lay.dp)]
                end = max(float(sim.gpu[r]) for r in ranks) + DP_AR_US
                for r in ranks:
                    if lay.dp > 1:
                        sim.comm_kernel(r, "dp", DP_ALLREDUCE, max(float(sim.gpu[r]), sim.comm[r]["dp"]), end)
                        sim.gpu[r] = end
                    sim.kernels(r, ((OPTIMIZER, OPT_US),), float(sim.gpu[r]))
        for r in range(lay.world):
            sim.cpu[r] = _cpu_step(sim, lay, r, k, float(step_start[r])) + 20.0
    return sim.events, starts


def write_traces(lay: Layout, out_dir: Path) -> list[float]:
    """One Kineto-like ``rank-<i>.json.gz`` per rank; returns the step starts (unix s)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    events, starts = generate(lay)
    for r, evs in events.items():
        info = {"rank": r, "world_size": lay.world, "backend": "nccl"}
        doc = {"schemaVersion": 1, "distributedInfo": info, "traceEvents": evs}
        (out_dir / f"rank-{r}.json.gz").write_bytes(gzip.compress(orjson.dumps(doc), compresslevel=1))
    return starts


def truth_for(lay: Layout, starts: list[float]) -> dict:
    """The answer: the slowed rank, or the node when the slowed ranks are exactly one node's ranks;
    a slowdown of every replica of a stage from the first step on is an imbalance, not a fault."""
    split = starts[min(lay.split(), len(starts) - 1)]
    slowed = sorted({r for s in lay.slow for r in s.ranks})
    faults = [s for s in lay.slow if s.first_step > 0]
    if not faults:
        return {"fault_id": None, "component": None, "node": None, "rank": None, "start": None, "end": None,
                "components": slowed, "inject_time": split}
    nodes = {lay.node(r) for r in slowed}
    node_ranks = [r for r in range(lay.world) if lay.node(r) in nodes]
    whole_node = len(nodes) == 1 and node_ranks == slowed and len(slowed) > 1
    comp = nodes.pop() if whole_node else f"rank-{slowed[0]}"
    return {"fault_id": "synthetic-slow-stream", "component": comp, "node": lay.node(slowed[0]),
            "rank": None if whole_node else slowed[0], "start": split, "end": None,
            "components": [f"rank-{r}" for r in slowed], "inject_time": split}


def write_case(lay: Layout, case_dir: Path) -> dict:
    """A case directory (manifest, topology, inject_time, traces/) and, beside what a detector reads,
    ``ground_truth.json``; returns the truth."""
    starts = write_traces(lay, case_dir / "traces")
    truth = truth_for(lay, starts)
    ranks = [f"rank-{r}" for r in range(lay.world)]
    topo = {"backend": "synthetic", "engine": "synth-layouts", "nodes": sorted({lay.node(r) for r in range(lay.world)}),
            "ranks": ranks, "rank_node": {f"rank-{r}": lay.node(r) for r in range(lay.world)}, "components": ranks}
    (case_dir / "topology.json").write_text(json.dumps(topo))
    (case_dir / "inject_time.txt").write_text(f"{truth['inject_time']:.6f}\n")
    (case_dir / "ground_truth.json").write_text(json.dumps(truth))
    (case_dir / "manifest.json").write_text(json.dumps({"generator": "chaosbench.detectors.outpost.layouts", "seed": lay.seed}))
    return truth
