"""The engine core: the driver-side loop that schedules, steps every rank, and heals failures.

Each step it takes the scheduler's batch, sends it to all ranks (rank 0 returns the sampled
tokens), streams tokens to the requests and updates the vLLM metrics. When a rank fails
(emulated XID or a dead worker) it logs the kernel-style line, kills the tensor-parallel
group (peers are stuck in the collective), starts it again with a fresh gloo group and
recomputes the running requests.

With data-parallel replicas each Serve replica runs one EngineCore for its block of ranks
(``replica``: layout.py), with its own scheduler, KV pool, metrics (labelled ``replica``) and
recovery: a failed rank restarts its replica only. With pipeline stages the step goes to every
rank of the replica and the tokens come back from the last stage's tp-0 rank. Replicas find each
other through ``<run_dir>/engine/replica-<d>.json`` (their ranks, exporters and the names of their
rank actors, unique per start: a restart never waits for a dead actor's name), so one replica can
open and close a trace window on all.
With dp = pp = 1 none of this applies: one core, component ``ingress``, unnamed rank actors.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from chaosbench.engines.mini.config import EngineConfig
from chaosbench.engines.mini.device import DeviceError, kmsg_line
from chaosbench.engines.mini.kv_pool import BlockPool
from chaosbench.engines.mini.metrics import EngineMetrics
from chaosbench.engines.mini.scheduler import Scheduler, Sequence
from chaosbench.engines.mini.tokenizer import ByteTokenizer
from chaosbench.engines.mini.worker import RankState, RankWorker, StepResult
from chaosbench.layout import replica_name

log = logging.getLogger("chaosbench.engine.mini")
RANK_START_TIMEOUT_S = 120.0
RANK_NAMESPACE = "chaosbench-mini"  # named rank actors (data-parallel layouts only)


@dataclass(frozen=True)
class TokenEvent:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


Emit = Callable[[TokenEvent], None]


class EngineLog:
    """JSON lines ``{time, component, level, message}`` in ``<run_dir>/logs/engine.jsonl`` (and Python logging)."""

    def __init__(self, run_dir: str):
        self.path = Path(run_dir) / "logs" / "engine.jsonl" if run_dir else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, component: str, level: str, message: str) -> None:
        log.log(logging.ERROR if level == "error" else logging.INFO, "%s: %s", component, message)
        if self.path:
            line = json.dumps({"time": time.time(), "component": component, "level": level, "message": message})
            with self.path.open("a") as fh:
                fh.write(line + "\n")


def rank_actor_name(rank: int, generation: str) -> str:
    return f"mini-rank-{rank}-{generation}"


class EngineCore:
    def __init__(self, cfg: EngineConfig, replica: int = 0):
        self.cfg = cfg
        self.layout = cfg.layout
        self.replica = replica
        self.rank_ids = self.layout.replica_ranks(replica)  # global ranks of this replica, in local order
        self.token_pos = (self.layout.pp - 1) * self.layout.tp  # the last stage's tp-0 rank samples
        self.component = "ingress" if self.layout.dp == 1 else replica_name(replica)
        self.tokenizer = ByteTokenizer(cfg.model.vocab)
        self.pool = BlockPool(cfg.kv_blocks, cfg.block_size)
        self.scheduler = Scheduler(self.pool, max_num_seqs=cfg.max_num_seqs, max_batched_tokens=cfg.max_batched_tokens,
                                   max_seq_len=cfg.model.max_seq_len, eos=self.tokenizer.eos)
        self.metrics = EngineMetrics(cfg.model.name, None if self.layout.single_group else replica_name(replica))
        self.elog = EngineLog(cfg.run_dir)
        base = cfg.metrics_port
        self.states = [RankState(metrics_port=base + 1 + i if base else 0) for i in self.rank_ids]
        self.ingress_target: str | None = None  # this replica's exporter, set by the server
        self.actor_names: list[str] = []  # named rank actors (data-parallel layouts only)
        self._starts = 0
        self.ranks: list[Any] = []
        self.infos: list[dict] = []
        self.profiling = False
        self._emit: dict[str, Emit] = {}
        self._last_token: dict[str, float] = {}
        self._inbox: list[Callable[[], None]] = []
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._start_ranks()
        self._thread = threading.Thread(target=self._loop, name="mini-engine-core", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread:
            self._thread.join(timeout=30)
        self._kill_ranks()

    # -- requests (any thread) -------------------------------------------------------------------
    def submit(self, seq: Sequence, emit: Emit) -> None:
        self.call(lambda: self._add(seq, emit))

    def abort(self, rid: str) -> None:
        self.call(lambda: self._abort(rid))

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` on the core thread between steps; the future gets its result."""
        fut: Future = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

        with self._cv:
            self._inbox.append(run)
            self._cv.notify()
        return fut

    def start_profile(self) -> Future:
        return self.call(self._start_profile)

    def stop_profile(self) -> Future:
        return self.call(self._stop_profile)

    # -- core thread -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                if not self._inbox and not self.scheduler.has_work() and not self._stop:
                    self._cv.wait(timeout=0.5)
                if self._stop:
                    return
                inbox, self._inbox = self._inbox, []
            for fn in inbox:
                fn()
            if self.scheduler.has_work():
                try:
                    self._step()
                except Exception:  # noqa: BLE001 - the loop must survive; the failure is logged
                    log.exception("engine step failed")
                    time.sleep(0.5)
            self._gauges()

    def _add(self, seq: Sequence, emit: Emit) -> None:
        self._emit[seq.rid] = emit
        self.scheduler.add(seq)

    def _abort(self, rid: str) -> None:
        if self.scheduler.abort(rid) is not None:
            self.metrics.success("abort")
        self._emit.pop(rid, None)
        self._last_token.pop(rid, None)

    def _gauges(self) -> None:
        self.metrics.running.set(len(self.scheduler.running))
        self.metrics.waiting.set(len(self.scheduler.waiting))
        self.metrics.kv_usage.set(self.pool.usage())

    def _step(self) -> None:
        sched = self.scheduler.schedule()
        if sched.preempted:
            self.metrics.preemptions.inc(sched.preempted)
        if not sched.seqs:
            self._refresh_capacity()
            time.sleep(0.05)  # nothing fits in the pool right now
            return
        results = self._execute(sched.batch)
        if results is None:
            return
        self.pool.set_capacity(min(r.usable_blocks for r in results))
        tokens = list(results[self.token_pos].tokens or ())
        finished = {s.rid for s in self.scheduler.update(sched, tokens)}
        now = time.time()
        for seq, tok in zip(sched.seqs, tokens, strict=True):
            self._deliver(seq, tok, now, seq.rid in finished)

    def _deliver(self, seq: Sequence, tok: int, now: float, finished: bool) -> None:
        emit = self._emit.get(seq.rid)
        if emit is None:
            return
        last = self._last_token.get(seq.rid)
        if last is None:
            self.metrics.ttft.observe(now - seq.arrival)
            self.metrics.queue.observe((seq.first_scheduled or now) - seq.arrival)
            self.metrics.prompt_tokens.inc(len(seq.prompt))
        else:
            self.metrics.itl.observe(now - last)
        self._last_token[seq.rid] = now
        self.metrics.generation_tokens.inc()
        text = "" if seq.finish_reason == "stop" else self.tokenizer.decode_token(tok)
        emit(TokenEvent(text=text, finish_reason=seq.finish_reason if finished else None,
                        prompt_tokens=len(seq.prompt), completion_tokens=len(seq.output)))
        if finished:
            self.metrics.e2e.observe(now - seq.arrival)
            self.metrics.success(seq.finish_reason or "length")
            self._emit.pop(seq.rid, None)
            self._last_token.pop(seq.rid, None)

    def _execute(self, batch: Any) -> list[StepResult] | None:
        refs = {w.execute.remote(batch): i for i, w in enumerate(self.ranks)}
        results: list[StepResult | None] = [None] * len(self.ranks)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                index = refs[ref]
                try:
                    results[index] = ray.get(ref)
                except DeviceError as err:
                    self._recover(index, f"xid {err.xid}", err)
                    return None
                except (RayActorError, RayTaskError) as err:
                    self._recover(index, type(err).__name__, None)
                    return None
        return results  # type: ignore[return-value]

    def _refresh_capacity(self) -> None:
        try:
            blocks = ray.get([w.poll_device.remote() for w in self.ranks], timeout=10)
        except DeviceError as err:
            self._recover(self.rank_ids.index(int(err.rank.rsplit("-", 1)[1])), f"xid {err.xid}", err)
            return
        except (GetTimeoutError, RayActorError, RayTaskError):
            return
        self.pool.set_capacity(min(blocks))

    # -- failures --------------------------------------------------------------------------------
    def _recover(self, index: int, reason: str, xid: DeviceError | None) -> None:
        """Restart this replica's ranks after its rank at position ``index`` failed."""
        rank = f"rank-{self.rank_ids[index]}"
        state = self.states[index]
        if xid is not None:
            self.elog.write(rank, "error", kmsg_line(rank, xid.xid, xid.pid))
            state = replace(state, handled_xid_seq=xid.seq, xid_count=state.xid_count + 1, last_xid=xid.xid)
        self.states[index] = replace(state, restarts=state.restarts + 1)
        group = "the tensor-parallel group" if self.layout.pp == 1 else f"{self.component}'s pipeline"
        self.elog.write(rank, "error", f"worker {rank} failed ({reason}); restarting {group} "
                                       f"and recomputing {len(self.scheduler.running)} running requests")
        self._kill_ranks()
        self.scheduler.preempt_all()
        while not self._stop:
            try:
                self._start_ranks()
                break
            except Exception as exc:  # noqa: BLE001 - keep trying while the engine is up
                self.elog.write(self.component, "error", f"rank restart failed: {type(exc).__name__}: {exc}")
                self._kill_ranks()
                time.sleep(2.0)
        self.elog.write(rank, "info", f"worker {rank} restarted (pid {self.infos[index]['pid'] if self.infos else '?'})")

    def _start_ranks(self) -> None:
        t0 = time.monotonic()
        cfg = self.cfg
        actor = ray.remote(RankWorker)
        self._starts += 1
        if self.layout.dp > 1:  # peers reach this replica's ranks by name (trace windows)
            self.actor_names = [rank_actor_name(r, f"{os.getpid()}-{self._starts}") for r in self.rank_ids]
        self.ranks = [
            actor.options(num_cpus=0, resources={cfg.rank_node(r): 0.001}, max_restarts=0,
                          **({"name": self.actor_names[k], "namespace": RANK_NAMESPACE} if self.actor_names else {}))
            .remote(cfg, r, self.states[k])
            for k, r in enumerate(self.rank_ids)
        ]
        self.infos = ray.get([w.info.remote() for w in self.ranks], timeout=RANK_START_TIMEOUT_S)
        self.elog.write(self.component, "info", f"rank actors up in {time.monotonic() - t0:.2f}s")
        self.states = [replace(s, metrics_port=info["metrics_port"]) for s, info in zip(self.states, self.infos)]
        ip, port = ray.get(self.ranks[0].free_port.remote(), timeout=RANK_START_TIMEOUT_S)
        ray.get([w.init_group.remote(ip, port) for w in self.ranks], timeout=RANK_START_TIMEOUT_S)
        self.pool.set_capacity(min(info["usable_blocks"] for info in self.infos))
        if self._window_open():
            ray.get([w.start_profile.remote() for w in self.ranks], timeout=60)
        self.publish()
        self.elog.write(self.component, "info", f"{len(self.ranks)} ranks started in {time.monotonic() - t0:.2f}s")

    def _kill_ranks(self) -> None:
        t0 = time.monotonic()
        for w in self.ranks:
            try:
                ray.kill(w, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.ranks = []
        _reap([int(i["pid"]) for i in self.infos])
        self.elog.write(self.component, "info", f"ranks killed in {time.monotonic() - t0:.2f}s")

    def _start_profile(self) -> bool:
        self.profiling = True
        if self.layout.dp > 1:
            self._window_flag().parent.mkdir(parents=True, exist_ok=True)
            self._window_flag().touch()
        ray.get([w.start_profile.remote() for w in self.ranks + self._peer_ranks()], timeout=60)
        return True

    def _stop_profile(self) -> list[str]:
        self.profiling = False
        if self.layout.dp > 1:
            self._window_flag().unlink(missing_ok=True)
        paths = ray.get([w.stop_profile.remote() for w in self.ranks + self._peer_ranks()], timeout=300)
        return [p for p in paths if p]

    # -- data-parallel replicas ------------------------------------------------------------------
    def _window_flag(self) -> Path:
        """Exists while a trace window is open: any replica may have opened it, every replica restarts into it."""
        return Path(self.cfg.trace_dir) / ".profiling-window"

    def _window_open(self) -> bool:
        return self.profiling if self.layout.dp == 1 else self._window_flag().exists()

    def _peer_ranks(self) -> list[Any]:
        """The other replicas' rank actors, by their published names (a replica being restarted is skipped: its
        restart joins the window)."""
        if self.layout.dp == 1 or not self.cfg.run_dir:
            return []
        peers = []
        for rep in published_replicas(self.cfg.run_dir):
            if rep["replica"] == replica_name(self.replica):
                continue
            for name in rep.get("actors", []):
                try:
                    peers.append(ray.get_actor(name, namespace=RANK_NAMESPACE))
                except ValueError:
                    self.elog.write(self.component, "info", f"{name} not found for the trace window (restarting)")
        return peers

    def publish(self) -> None:
        """Write ``<run_dir>/engine/replica-<d>.json`` (the replica's exporter and ranks) for the other replicas."""
        if self.layout.dp == 1 or not self.cfg.run_dir:
            return
        path = replicas_dir(self.cfg.run_dir) / f"{replica_name(self.replica)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"replica": replica_name(self.replica), "ingress": self.ingress_target,
                                   "ranks": self.infos, "actors": self.actor_names}))
        os.replace(tmp, path)


def replicas_dir(run_dir: str) -> Path:
    return Path(run_dir) / "engine"


def published_replicas(run_dir: str) -> list[dict]:
    """What every replica published, in replica order (a file being replaced is read on the next call)."""
    out = []
    for path in sorted(replicas_dir(run_dir).glob("replica-*.json"), key=lambda p: int(p.stem.split("-")[1])):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _reap(pids: list[int], timeout_s: float = 3.0) -> None:
    """Wait for killed rank processes to exit; SIGKILL the ones stuck in a collective (same host only)."""
    import psutil

    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if "RankWorker" in " ".join(proc.cmdline()):
                procs.append(proc)
        except (psutil.Error, OSError):
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout_s)
