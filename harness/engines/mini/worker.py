"""One tensor-parallel rank: a Ray actor holding a model shard, its KV cache and its emulated device.

The engine core calls ``execute(batch)`` on every rank each step; the ranks run the layers,
all-reducing over gloo, and rank 0 samples and returns the next tokens. Each rank serves its
own Prometheus exporter (dcgm-exporter names for the emulated device, step/all-reduce
histograms) and records torch.profiler windows on request.

In a DP x PP x TP layout (layout.py) ``index`` is the global rank; the rank joins its replica's
torch.distributed world (local rank ``index % (pp * tp)``), all-reduces over its stage's own
tensor-parallel group and, with pipeline stages, runs pipeline.run_stage: the last stage's
tp-0 rank returns the tokens. Its metrics then carry ``replica`` and ``stage`` labels and its
traces the replica, stage and tp index (profiling.py). With dp = pp = 1 nothing of this applies.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, start_http_server
from torch.profiler import record_function

from chaosbench.engines.mini import profiling
from chaosbench.engines.mini.config import EngineConfig
from chaosbench.engines.mini.device import DeviceError, DeviceLayer
from chaosbench.engines.mini.model import ModelShard, StepBatch, sample
from chaosbench.engines.mini.pipeline import StageLinks, run_stage

HANG_POLL_S = 0.05
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24)


@dataclass(frozen=True)
class RankState:
    """What survives a rank restart (the device's history, not the process)."""

    restarts: int = 0
    handled_xid_seq: int = 0
    xid_count: int = 0
    last_xid: int = 0
    metrics_port: int = 0


@dataclass(frozen=True)
class StepResult:
    tokens: tuple[int, ...] | None  # the replica's token rank only (rank 0 of the last stage)
    usable_blocks: int
    seconds: float


class RankWorker:
    def __init__(self, cfg: EngineConfig, index: int, state: RankState):
        torch.set_num_threads(1)
        if cfg.gloo_ifname:  # read by gloo when the process group is created (no runtime_env: it slows restarts)
            os.environ["GLOO_SOCKET_IFNAME"] = cfg.gloo_ifname
        self.cfg, self.index = cfg, index
        self.rank = f"rank-{index}"
        self.node = cfg.rank_node(index)
        self.ip = cfg.node_ip(self.node) or _node_ip()
        self.layout = cfg.layout
        self.coord = self.layout.coord(index)
        self.shard = ModelShard(cfg.model, self.coord.tp_index, cfg.tensor_parallel, cfg.kv_blocks, cfg.block_size,
                                stage=self.coord.stage, stages=self.layout.pp)
        place = {} if self.layout.single_group else {"replica": self.coord.replica_name, "stage": self.coord.stage_name}
        self.device = DeviceLayer(self.rank, index, cfg.control_dir, cfg.kv_blocks,
                                  handled_xid_seq=state.handled_xid_seq, xid_count=state.xid_count,
                                  last_xid=state.last_xid, labels=place)
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(self.device)
        labels = {"rank": self.rank, "gpu": str(index), **place}
        names = list(labels)
        self.step_hist = Histogram("chaosbench_rank_step_seconds", "Time of one engine step on this rank.",
                                   names, registry=self.registry, buckets=STEP_BUCKETS).labels(**labels)
        self.ar_hist = Histogram("chaosbench_rank_allreduce_seconds", "Time of one all-reduce on this rank.",
                                 names, registry=self.registry, buckets=STEP_BUCKETS).labels(**labels)
        self.p2p_hist = None
        if self.layout.pp > 1:
            self.p2p_hist = Histogram("chaosbench_rank_p2p_seconds", "Time this rank waited on one activation "
                                      "receive, or on the step's activation sends, between pipeline stages.", names,
                                      registry=self.registry, buckets=STEP_BUCKETS).labels(**labels)
        restarts = Counter("chaosbench_rank_restarts", "Restarts of this rank's worker.", names,
                           registry=self.registry).labels(**labels)
        restarts.inc(state.restarts)
        bind = cfg.node_ip(self.node) or "0.0.0.0"
        self._server = _serve_metrics(state.metrics_port, bind, self.registry)
        self.metrics_port = self._server.server_port
        self.prof = None
        # Kineto's first start costs seconds: pay it once the group is formed, off the serving path,
        # not at the first trace window
        self._grouped = threading.Event()
        self._warm = threading.Thread(target=_warm_profiler, args=(self._grouped,), name="profiler-warmup",
                                      daemon=True)
        self._warm.start()
        self.window_steps: list[int] = []
        self.window_start = 0.0
        self.pid = os.getpid()
        self.tp_group = None  # None: the world is the tensor-parallel group (no pipeline stages)
        self.links: StageLinks | None = None  # set with pipeline stages

    def info(self) -> dict:
        info = {"rank": self.rank, "index": self.index, "node": self.node, "pid": self.pid, "ip": self.ip,
                "metrics_port": self.metrics_port, "usable_blocks": self.device.usable_blocks()}
        if not self.layout.single_group:
            info.update(replica=self.coord.replica_name, stage=self.coord.stage_name, tp_index=self.coord.tp_index)
        return info

    def free_port(self) -> tuple[str, int]:
        with socket.socket() as s:
            s.bind((self.ip, 0))
            return self.ip, s.getsockname()[1]

    def init_group(self, master_ip: str, port: int) -> bool:
        """Join the replica's world (its master: the replica's first rank); with stages, also form each stage's
        tensor-parallel group (every rank creates every group, in the same order) and the stage links."""
        lay, timeout = self.layout, timedelta(seconds=self.cfg.gloo_timeout_s)
        dist.init_process_group("gloo", init_method=f"tcp://{master_ip}:{port}", rank=lay.local_rank(self.index),
                                world_size=lay.replica_size, timeout=timeout)
        if lay.pp > 1:
            groups = [dist.new_group(list(range(p * lay.tp, (p + 1) * lay.tp)), timeout=timeout)
                      for p in range(lay.pp)]
            self.tp_group = groups[self.coord.stage]
            self.links = self._stage_links()
        self._grouped.set()
        return True

    def _stage_links(self) -> StageLinks:
        me, tp, stage = self.layout.local_rank(self.index), self.layout.tp, self.coord.stage
        send = recv = None
        if stage < self.layout.pp - 1:
            send = lambda t, tag: dist.isend(t, me + tp, tag=tag)  # same tp index, next stage
        if stage > 0:
            recv = lambda t, tag: dist.irecv(t, me - tp, tag=tag)  # same tp index, previous stage
        hist = self.p2p_hist
        return StageLinks(all_reduce=self._all_reduce, send=send, recv=recv, before_p2p=self._hang_while_asked,
                          p2p_seconds=hist.observe if hist is not None else lambda s: None)

    def execute(self, batch: StepBatch) -> StepResult:
        t0 = time.perf_counter()
        self.device.begin_busy()
        try:
            with record_function("engine.step"):
                self.device.poll()
                if self.links is not None:
                    out = run_stage(self.shard, batch, self.links, self.device.throttle, self._micro_batches())
                    tokens = tuple(out) if out is not None else None
                else:
                    logits = self.shard.forward(batch, self._all_reduce, self.device.throttle)
                    tokens = None
                    if logits is not None:
                        tokens = tuple(sample(logits, batch.seqs, [s.context_len for s in batch.seqs]))
        except DeviceError as err:
            print(str(err), file=sys.stderr, flush=True)
            raise
        seconds = time.perf_counter() - t0
        self.step_hist.observe(seconds)
        self.device.record_busy(seconds)
        if self.prof is not None:
            self.window_steps.append(batch.step)
        return StepResult(tokens=tokens, usable_blocks=self.device.usable_blocks(), seconds=seconds)

    def _micro_batches(self) -> int:
        return self.cfg.micro_batches or self.layout.pp

    def poll_device(self) -> int:
        """Between steps (idle engine): apply the control file, report usable KV blocks."""
        self.device.poll()
        return self.device.usable_blocks()

    def _all_reduce(self, t: torch.Tensor) -> None:
        with record_function("allreduce"):
            t0 = time.perf_counter()
            self._hang_while_asked()
            dist.all_reduce(t, group=self.tp_group)
            self.ar_hist.observe(time.perf_counter() - t0)

    def _hang_while_asked(self) -> None:
        """``collective_hang``: block inside the collective before this rank's part reaches the transport, for as
        long as the device control says so. The process, its exporter and its device (busy: a step is in flight) stay
        alive; the peers wait in the transport for this rank's data."""
        while self.device.refresh().collective_hang:
            time.sleep(HANG_POLL_S)

    def start_profile(self) -> bool:
        self._grouped.set()
        self._warm.join()
        if self.prof is None:
            self.prof = profiling.start_profiler(ops=self.cfg.trace_ops)
            self.window_start = time.time()
            self._anchor_us = time.time_ns() / 1000.0
            profiling.anchor_event()
            self.window_steps = []
        return True

    def stop_profile(self) -> str | None:
        """Stop the window and write the raw trace; returns its path for ``profiling.finalize``."""
        if self.prof is None:
            return None
        prof, self.prof = self.prof, None
        trace_dir = Path(self.cfg.trace_dir)
        trace_dir.mkdir(parents=True, exist_ok=True)
        raw = trace_dir / f".{self.rank}.{self.pid}.{time.time_ns()}.raw.json"
        profiling.stop_profiler(prof, raw)
        meta = {"rank": self.rank, "steps": self.window_steps, "anchor_epoch_us": self._anchor_us,
                "window": [self.window_start, time.time()]}
        if not self.layout.single_group:
            meta["place"] = profiling.place(self.layout.label(), self.coord.replica, self.coord.stage,
                                            self.coord.tp_index)
        profiling.write_meta(raw, meta)
        return str(raw)

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
        self._server.shutdown()


def _warm_profiler(after: threading.Event) -> None:
    after.wait()
    try:
        profiling.start_profiler().stop()
    except Exception:  # noqa: BLE001 - only a warm-up; the real start reports errors
        pass


def _serve_metrics(port: int, addr: str, registry: CollectorRegistry):
    """Bind the exporter; a restarted rank reuses its port, which its killed predecessor may still hold."""
    deadline = time.monotonic() + 15.0
    while True:
        try:
            server, _ = start_http_server(port, addr=addr, registry=registry)
            return server
        except OSError:
            if port == 0 or time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()
