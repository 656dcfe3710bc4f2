"""The engine core per replica, with Ray replaced by an in-process fake (Ray is never started here).

Fake ranks answer like RankWorkers: only the replica's token rank (last stage, tp 0) returns tokens. The core
must drive exactly its replica's rank block, take the tokens from the token rank, restart only its replica
when one of its ranks fails, publish itself for the other replicas, and open trace windows on every replica.
With the tensor-parallel-only layout it must start its ranks exactly as before.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from chaosbench.engines.mini import core
from chaosbench.engines.mini.config import EngineConfig, ModelConfig
from chaosbench.engines.mini.core import EngineCore, TokenEvent, published_replicas
from chaosbench.engines.mini.device import DeviceError
from chaosbench.engines.mini.scheduler import Sequence
from chaosbench.engines.mini.worker import StepResult

MODEL = ModelConfig(layers=4, hidden=64, heads=4, vocab=512, max_seq_len=64)


class _Ref:
    def __init__(self, fn: Any, args: tuple) -> None:
        self.value, self.error = None, None
        try:
            self.value = fn(*args)
        except Exception as exc:  # noqa: BLE001 - raised again by get, as Ray does
            self.error = exc

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class _Handle:
    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.obj, name)
        return type("M", (), {"remote": staticmethod(lambda *a: _Ref(method, a))})()


class FakeRay:
    def __init__(self) -> None:
        self.created: list[tuple[int, dict]] = []
        self.named: dict[tuple[str, str], _Handle] = {}
        self.killed: list[int] = []

    def remote(self, cls: type) -> Any:
        fake = self

        class ActorClass:
            def options(self, **opts: Any) -> Any:
                def remote(cfg: EngineConfig, index: int, state: Any) -> _Handle:
                    handle = _Handle(cls(cfg, index, state))
                    fake.created.append((index, opts))
                    if "name" in opts:
                        fake.named[(opts["namespace"], opts["name"])] = handle
                    return handle

                return type("O", (), {"remote": staticmethod(remote)})()

        return ActorClass()

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        return [r.result() for r in refs] if isinstance(refs, list) else refs.result()

    def wait(self, pending: list, num_returns: int = 1) -> tuple[list, list]:
        return pending[:num_returns], pending[num_returns:]

    def kill(self, handle: _Handle, no_restart: bool = True) -> None:
        self.killed.append(handle.obj.index)
        self.named = {k: v for k, v in self.named.items() if v is not handle}

    def get_actor(self, name: str, namespace: str | None = None) -> _Handle:
        try:
            return self.named[(namespace or "", name)]
        except KeyError:
            raise ValueError(f"no actor {name}") from None


FAIL_ONCE: set[int] = set()


class FakeRank:
    def __init__(self, cfg: EngineConfig, index: int, state: Any) -> None:
        self.cfg, self.index = cfg, index
        c = cfg.layout.coord(index)
        self.token_rank = c.stage == cfg.layout.pp - 1 and c.tp_index == 0
        self.profiling = False

    def info(self) -> dict:
        return {"rank": f"rank-{self.index}", "index": self.index, "node": self.cfg.rank_node(self.index),
                "pid": 4_000_000 + self.index, "ip": "127.0.0.1", "metrics_port": 9100 + self.index,
                "usable_blocks": self.cfg.kv_blocks}

    def free_port(self) -> tuple[str, int]:
        return "127.0.0.1", 1

    def init_group(self, ip: str, port: int) -> bool:
        return True

    def execute(self, batch: Any) -> StepResult:
        if self.index in FAIL_ONCE:
            FAIL_ONCE.discard(self.index)
            raise DeviceError(f"rank-{self.index}", 79, 1, 123)
        tokens = tuple(300 + s.context_len % 100 for s in batch.seqs) if self.token_rank else None
        return StepResult(tokens=tokens, usable_blocks=self.cfg.kv_blocks, seconds=0.001)

    def poll_device(self) -> int:
        return self.cfg.kv_blocks

    def start_profile(self) -> bool:
        self.profiling = True
        return True

    def stop_profile(self) -> str:
        self.profiling = False
        return f"/raw/rank-{self.index}"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    ray = FakeRay()
    monkeypatch.setattr(core, "ray", ray)
    monkeypatch.setattr(core, "RankWorker", FakeRank)
    monkeypatch.setattr(core, "_reap", lambda pids: None)
    return ray


def _cfg(tmp: Path, dp: int, pp: int, tp: int) -> EngineConfig:
    return EngineConfig(model=MODEL, tensor_parallel=tp, data_parallel=dp, pipeline_parallel=pp, nodes=2,
                        kv_blocks=16, run_dir=str(tmp / "run"), trace_dir=str(tmp / "traces"))


def _complete(engine: EngineCore, rid: str, max_tokens: int = 3) -> list[TokenEvent]:
    events: list[TokenEvent] = []
    done = threading.Event()

    def emit(ev: TokenEvent) -> None:
        events.append(ev)
        if ev.finish_reason:
            done.set()

    engine.submit(Sequence(rid=rid, prompt=[1, 40, 41], max_tokens=max_tokens, temperature=0.0), emit)
    assert done.wait(20), f"{rid} did not finish"
    return events


def _log(tmp: Path) -> list[dict]:
    return [json.loads(ln) for ln in (tmp / "run" / "logs" / "engine.jsonl").read_text().splitlines()]


def test_replica_core_drives_its_rank_block(tmp_path: Path, fake: FakeRay) -> None:
    cfg = _cfg(tmp_path, 2, 2, 2)
    engine = EngineCore(cfg, replica=1)
    engine.start()
    try:
        assert [i for i, _ in fake.created] == [4, 5, 6, 7]
        assert [o["resources"] for _, o in fake.created] == [{"node-1": 0.001}] * 4
        names = [o["name"] for _, o in fake.created]
        assert [n.rsplit("-", 2)[0] for n in names] == [f"mini-rank-{r}" for r in range(4, 8)]
        events = _complete(engine, "a")
        assert [e.completion_tokens for e in events] == [1, 2, 3] and events[-1].finish_reason == "length"
        [pub] = published_replicas(cfg.run_dir)
        assert pub["replica"] == "replica-1" and [r["rank"] for r in pub["ranks"]] == [f"rank-{r}" for r in range(4, 8)]

        FAIL_ONCE.add(6)  # a stage-1 rank of this replica falls over
        assert _complete(engine, "b")[-1].finish_reason == "length"
        assert sorted(fake.killed) == [4, 5, 6, 7] and [i for i, _ in fake.created[4:]] == [4, 5, 6, 7]
        assert not set(names) & {o["name"] for _, o in fake.created[4:]}  # a restart takes fresh names
        assert [r["actors"] for r in published_replicas(cfg.run_dir)] == [[o["name"] for _, o in fake.created[4:]]]
        errors = [(ln["component"], ln["message"]) for ln in _log(tmp_path) if ln["level"] == "error"]
        assert errors[0][0] == "rank-6" and "Xid" in errors[0][1]
        assert "restarting replica-1's pipeline" in errors[1][1]
        assert {ln["component"] for ln in _log(tmp_path)} <= {"rank-6", "replica-1"}
    finally:
        engine.shutdown()
    exported = generate_latest(engine.metrics.registry).decode()
    assert 'vllm:generation_tokens_total{model_name="mini-llama",replica="replica-1"} 6.0' in exported


def test_trace_window_opens_on_every_replica(tmp_path: Path, fake: FakeRay) -> None:
    cfg = _cfg(tmp_path, 2, 1, 2)
    Path(cfg.trace_dir).mkdir(parents=True)
    other, mine = EngineCore(cfg, replica=0), EngineCore(cfg, replica=1)
    other.start()
    mine.start()
    try:
        ranks = {h.obj.index: h.obj for (_, _), h in fake.named.items()}
        assert sorted(ranks) == [0, 1, 2, 3]
        mine.start_profile().result(timeout=10)
        assert all(r.profiling for r in ranks.values()) and (Path(cfg.trace_dir) / ".profiling-window").exists()
        assert other._window_open()  # a restart of the other replica joins the window
        paths = mine.stop_profile().result(timeout=10)
        assert sorted(paths) == [f"/raw/rank-{r}" for r in range(4)]
        assert not any(r.profiling for r in ranks.values()) and not other._window_open()
        assert [p["replica"] for p in published_replicas(cfg.run_dir)] == ["replica-0", "replica-1"]
    finally:
        other.shutdown()
        mine.shutdown()


def test_tensor_parallel_core_starts_its_ranks_as_before(tmp_path: Path, fake: FakeRay) -> None:
    cfg = EngineConfig(model=MODEL, tensor_parallel=2, nodes=2, kv_blocks=16, run_dir=str(tmp_path / "run"),
                       trace_dir=str(tmp_path / "traces"))
    engine = EngineCore(cfg)
    engine.start()
    try:
        assert fake.created == [(0, {"num_cpus": 0, "resources": {"node-0": 0.001}, "max_restarts": 0}),
                                (1, {"num_cpus": 0, "resources": {"node-1": 0.001}, "max_restarts": 0})]
        assert _complete(engine, "a")[-1].finish_reason == "length"
        assert not (tmp_path / "run" / "engine").exists()
        assert {ln["component"] for ln in _log(tmp_path)} == {"ingress"}
        FAIL_ONCE.add(1)
        assert _complete(engine, "b")[-1].finish_reason == "length"
        errors = [(ln["component"], ln["message"]) for ln in _log(tmp_path) if ln["level"] == "error"]
        assert errors[0][0] == "rank-1" and "restarting the tensor-parallel group and recomputing" in errors[1][1]
    finally:
        engine.shutdown()
    exported = generate_latest(engine.metrics.registry).decode()
    assert 'vllm:generation_tokens_total{model_name="mini-llama"} 6.0' in exported


def test_server_maps_serve_replicas_to_rank_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Serve wiring's pure parts (importing the server starts no Ray)."""
    from types import SimpleNamespace

    from chaosbench.engines.mini import server

    cfg = _cfg(tmp_path, 2, 2, 2)
    monkeypatch.setattr(server.serve, "get_replica_context", lambda: SimpleNamespace(rank=SimpleNamespace(rank=1)))
    assert server._replica_index(cfg) == 1
    monkeypatch.setattr(server.serve, "get_replica_context", lambda: SimpleNamespace(rank=5))
    with pytest.raises(RuntimeError, match="outside data_parallel=2"):
        server._replica_index(cfg)
    legacy = EngineConfig(model=MODEL, tensor_parallel=2, metrics_port=9000)
    assert server._replica_index(legacy) == 0  # never asks Serve
    assert server._ingress_port(legacy, 0) == 9000
    assert [server._ingress_port(replace_port(cfg, 9000), d) for d in (0, 1)] == [9000, 9009]  # ranks: 9001..9008
    assert server._ingress_port(cfg, 1) == 0  # ephemeral stays ephemeral
    pubs = [{"replica": "replica-0", "ingress": "10.0.0.1:1", "ranks": [{"rank": "rank-0", "ip": "10.0.0.2",
                                                                       "metrics_port": 2}]},
            {"replica": "replica-1", "ingress": None, "ranks": []}]
    assert server._replica_targets(pubs) == [("replica-0", "10.0.0.1:1"), ("rank-0", "10.0.0.2:2")]
    app = server.MiniServer.options(num_replicas=2)
    assert app.num_replicas == 2 and app.ray_actor_options["resources"] == {"node-0": 0.001}


def replace_port(cfg: EngineConfig, port: int) -> EngineConfig:
    from dataclasses import replace

    return replace(cfg, metrics_port=port)


def test_deploy_waits_for_every_replica_to_publish() -> None:
    from chaosbench.engines.mini import _targets

    answers = iter([[("replica-0", "a:1"), ("rank-0", "a:2")],
                    [("replica-0", "a:1"), ("rank-0", "a:2"), ("replica-1", "a:3"), ("rank-1", "a:4")]])

    class Call:
        def remote(self) -> Any:
            return type("R", (), {"result": staticmethod(lambda timeout_s: next(answers))})()

    handle = type("H", (), {"metrics_targets": Call()})()
    assert [c for c, _ in _targets(handle, 2)] == ["replica-0", "rank-0", "replica-1", "rank-1"]
