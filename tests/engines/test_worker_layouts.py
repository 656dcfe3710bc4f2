"""Real RankWorkers (no Ray) in plain processes over gloo on 127.0.0.1: one replica per layout.

Each rank process builds the worker the engine core would start, joins the replica's torch.distributed
world, runs a prefill and a decode step inside a trace window and reports its tokens, its trace and a
scrape of its exporter. The pipeline layout must return the tokens of the tensor-parallel-only layout, name
its place in metrics and traces, and keep the per-rank device faults per rank.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import socket
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from chaosbench.engines.mini.config import EngineConfig, ModelConfig
from chaosbench.engines.mini.model import SeqSlice, StepBatch

MODEL = ModelConfig(layers=4, hidden=64, heads=4, vocab=512, max_seq_len=64, seed=5)
BLOCK = 4


def _steps() -> list[StepBatch]:
    a = SeqSlice(start=0, length=5, context_len=5, block_table=(0, 1), temperature=0.0)
    b = SeqSlice(start=5, length=3, context_len=3, block_table=(2,), temperature=0.9, seed=4)
    prefill = StepBatch(step=1, tokens=(1, 40, 41, 42, 43, 1, 50, 51), positions=(0, 1, 2, 3, 4, 0, 1, 2),
                        slots=(0, 1, 2, 3, 4, 8, 9, 10), seqs=(a, b))
    a2 = replace(a, start=0, length=1, context_len=6)
    b2 = replace(b, start=1, length=1, context_len=4)
    decode = StepBatch(step=2, tokens=(7, 8), positions=(5, 3), slots=(5, 11), seqs=(a2, b2))
    return [prefill, decode]


def _rank_main(cfg: EngineConfig, index: int, port: int, out: multiprocessing.Queue) -> None:
    from chaosbench.engines.mini import profiling
    from chaosbench.engines.mini.worker import RankState, RankWorker

    worker = RankWorker(cfg, index, RankState())
    try:
        first = cfg.layout.replica_ranks(cfg.layout.coord(index).replica)[0]
        worker.init_group("127.0.0.1", port + first)  # each replica its own world, its own master port
        worker.start_profile()
        results = [worker.execute(b) for b in _steps()]
        trace = profiling.finalize(Path(worker.stop_profile()))
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        out.put((index, [r.tokens for r in results], [r.usable_blocks for r in results], str(trace), text,
                 worker.info()))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        out.put((index, f"{type(exc).__name__}: {exc}", None, None, None, None))
    finally:
        worker.shutdown()


def _free_ports(n: int) -> int:
    """A base port with ``n`` free ports after it (checked now; the ranks bind them a moment later)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n < 65000 and all(_port_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port range")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _run(tmp: Path, dp: int, pp: int, tp: int, mem_fraction: dict[int, float] | None = None) -> dict[int, tuple]:
    cfg = EngineConfig(model=MODEL, tensor_parallel=tp, data_parallel=dp, pipeline_parallel=pp, nodes=2,
                       block_size=BLOCK, kv_blocks=8, trace_dir=str(tmp / "traces"), control_dir=str(tmp / "ctl"),
                       node_ips={"node-0": "127.0.0.1", "node-1": "127.0.0.1"}, gloo_timeout_s=60.0)
    (tmp / "ctl").mkdir(parents=True, exist_ok=True)
    for rank, frac in (mem_fraction or {}).items():
        (tmp / "ctl" / f"rank-{rank}.json").write_text(json.dumps({"mem_pool_fraction": frac}))
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "chaosbench.engines.mini.worker"])
    out = ctx.Queue()
    port = _free_ports(cfg.layout.world_size)
    procs = [ctx.Process(target=_rank_main, args=(cfg, r, port, out)) for r in range(cfg.layout.world_size)]
    for p in procs:
        p.start()
    got = {}
    try:
        for _ in procs:
            row = out.get(timeout=90)
            got[row[0]] = row[1:]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    errors = {r: v[0] for r, v in got.items() if isinstance(v[0], str)}
    assert not errors, errors
    return got


# one module-scoped run per layout, so that each test waits only for the layouts it reads
@pytest.fixture(scope="module")
def tp_only(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple]:
    return _run(tmp_path_factory.mktemp("tp"), 1, 1, 2)


@pytest.fixture(scope="module")
def piped(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple]:
    return _run(tmp_path_factory.mktemp("pp"), 1, 2, 2, mem_fraction={3: 0.5})


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple]:
    return _run(tmp_path_factory.mktemp("dp"), 2, 2, 1)


def _reference_tokens() -> list[tuple[int, ...]]:
    """The unsplit model on one rank, in this process."""
    from chaosbench.engines.mini.model import ModelShard, sample

    shard = ModelShard(MODEL, 0, 1, 8, BLOCK)
    out = []
    for b in _steps():
        logits = shard.forward(b, lambda t: None, lambda s: None)
        out.append(tuple(sample(logits, b.seqs, [s.context_len for s in b.seqs])))
    return out


def test_pipeline_replica_returns_the_tensor_parallel_tokens(piped: dict) -> None:
    ref = _reference_tokens()
    assert piped[2][0] == ref  # the last stage's tp-0 rank
    assert all(piped[r][0] == [None, None] for r in (0, 1, 3))


def test_device_faults_stay_per_rank(piped: dict) -> None:
    assert [piped[r][1][-1] for r in range(4)] == [8, 8, 8, 4]  # rank-3 alone lost half its KV blocks


def test_tensor_parallel_replica_returns_the_same_tokens(tp_only: dict) -> None:
    assert tp_only[0][0] == _reference_tokens() and tp_only[1][0] == [None, None]


def test_replicas_run_their_own_rank_blocks(two_replicas: dict) -> None:
    ref = _reference_tokens()
    assert two_replicas[1][0] == ref == two_replicas[3][0]  # each replica's token rank, same weights
    assert two_replicas[0][0] == two_replicas[2][0] == [None, None]
    assert [two_replicas[r][4]["replica"] for r in range(4)] == ["replica-0"] * 2 + ["replica-1"] * 2


def test_metrics_name_the_place_beyond_the_tensor_parallel_layout(tp_only: dict, two_replicas: dict) -> None:
    legacy = tp_only[1][3]
    assert 'chaosbench_rank_step_seconds_count{gpu="1",rank="rank-1"}' in legacy
    assert "replica=" not in legacy and "chaosbench_rank_p2p_seconds" not in legacy
    rank3 = two_replicas[3][3]  # rank-3: replica-1, stage 1
    where = 'rank="rank-3",replica="replica-1",stage="replica-1.stage-1"}'
    assert f'chaosbench_rank_step_seconds_count{{gpu="3",{where}' in rank3
    assert f'chaosbench_rank_p2p_seconds_count{{gpu="3",{where}' in rank3
    fb = next(ln for ln in rank3.splitlines() if ln.startswith("DCGM_FI_DEV_FB_USED{"))
    assert fb.startswith('DCGM_FI_DEV_FB_USED{UUID="GPU-mini-3",emulated="true",gpu="3"') and where in fb
    info = two_replicas[2][4]
    assert (info["rank"], info["replica"], info["stage"], info["tp_index"]) == ("rank-2", "replica-1",
                                                                               "replica-1.stage-0", 0)


def _trace(path: str) -> dict:
    with gzip.open(path, "rt") as fh:
        return json.load(fh)


def test_traces_name_replica_stage_and_roles(tp_only: dict, piped: dict) -> None:
    legacy = _trace(tp_only[0][2])
    assert "replica" not in legacy["chaosbench"]
    assert not any("role" in (e.get("args") or {}) for e in legacy["traceEvents"])
    assert not any("replica" in str(e.get("args")) for e in legacy["traceEvents"] if e.get("ph") == "M")

    doc = _trace(piped[3][2])  # rank-3: stage 1, tp 1
    assert {k: doc["chaosbench"][k] for k in ("rank", "layout", "replica", "stage", "tp_index")} == \
        {"rank": "rank-3", "layout": "1x2x2", "replica": 0, "stage": 1, "tp_index": 1}
    events = doc["traceEvents"]
    labels = [e["args"]["labels"] for e in events if e.get("name") == "process_labels"]
    assert labels and set(labels) == {"replica-0,replica-0.stage-1,tp-1"}
    roles = {e["name"]: e["args"]["role"] for e in events if e.get("ph") == "X"}
    assert roles["engine.step"] == "step" and roles["model.forward"] == "compute" and roles["layer.2"] == "compute"
    assert roles["allreduce"] == "tp-comm" and roles["pp.recv"] == "pp-comm"
    assert "layer.0" not in roles and "pp.send" not in roles  # stage 1 holds layers 2, 3 and sends nothing
    first = {e["name"]: e["args"]["role"] for e in _trace(piped[1][2])["traceEvents"] if e.get("ph") == "X"}
    assert first["pp.send"] == "pp-comm" and first["pp.send.wait"] == "pp-comm" and "layer.0" in first
    threads = [e["args"]["name"] for e in events if e.get("name") == "thread_name"]
    assert any(t.startswith("compute: ") for t in threads) and any(t.startswith("tp-comm: ") for t in threads)
