"""Waits are victims, nodes are named, every parallel layout: generated GPU-style traces with known answers
(chaosbench.detectors.outpost.layouts: DP x PP x TP, Kineto-like, a different pid and stream ids on every rank).

The slowdowns are mild (10 %): below any single kernel's threshold (~22 % at lambda 4 on a 5 % floor),
so what finds the slow stream is its busy time per step (waits.with_busy), while every wait of its peers
grows by the whole slowdown. Each layout is checked through the detector contract (a case with its
injection time and topology) and as a bare trace folder through ``chaosbench detect outpost --json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from chaosbench.case import CaseView
from chaosbench.cli import main
from chaosbench.detectors.api import run_detector
from chaosbench.detectors.outpost import detect, outpost
from chaosbench.detectors.outpost.importers import read_traces
from chaosbench.detectors.outpost.layouts import Layout, Slow, write_case
from chaosbench.detectors.outpost.ttc import build
from chaosbench.detectors.outpost.waits import BUSY_PREFIX, waits, with_busy

DPXPP = Layout(dp=4, pp=4, seed=1, slow=(Slow((6,), 1.1, 12),))  # replica 1, stage 2
TP = Layout(dp=1, pp=1, tp=4, seed=2, slow=(Slow((2,), 1.1, 12),))
IMBALANCE = Layout(dp=4, pp=4, seed=3, slow=(Slow((3, 7, 11, 15), 1.3, 0),))  # last stage, every replica
NODE = Layout(dp=4, pp=4, seed=4, slow=(Slow((4, 5, 6, 7), 1.1, 12),))  # replica 1 = node-1


def _case(tmp_path: Path, name: str, lay: Layout) -> tuple[Path, dict]:
    return tmp_path / name, write_case(lay, tmp_path / name)


def _bare(tmp_path: Path, case: Path, capsys) -> dict:
    """The traces alone (no manifest, topology or injection time) through the CLI."""
    bare = tmp_path / f"{case.name}-bare"
    shutil.copytree(case / "traces", bare)
    assert main(["detect", "outpost", str(bare), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("lay,rank", [(DPXPP, "rank-6"), (TP, "rank-2")], ids=["dp4xpp4", "tp4"])
def test_the_slow_compute_stream_comes_first(tmp_path: Path, lay: Layout, rank: str, capsys) -> None:
    case, truth = _case(tmp_path, "slow", lay)
    assert truth["component"] == rank
    rep = outpost(case / "traces", split=truth["inject_time"])
    assert rep.anomalous
    top = rep.ranking[0]
    assert (top.component, top.thread, top.cause) == (rank, "stream 7", True)  # the compute stream, not a wait
    # below every single kernel's threshold: the stream's busy time per step is the evidence
    assert any(e.name.startswith(BUSY_PREFIX) and e.component == rank for e in rep.events)
    assert all(r.component == rank for r in rep.ranking if r.cause)
    result = run_detector("outpost", detect, CaseView(case))
    assert result.status == "ok", result.error
    assert result.components()[0] == rank  # a rank fault stays on the rank (rank-6 shares node-1 with 4, 5, 7)
    bare = _bare(tmp_path, case, capsys)
    assert bare["anomalous"] is True
    assert (bare["ranking"][0]["component"], bare["ranking"][0]["thread"]) == (rank, "stream 7")


def test_pipeline_imbalance_blames_no_replica(tmp_path: Path, capsys) -> None:
    """The last stage slower on every replica from the first step: no worker differs from its peers (the
    same stage of the other replicas, matched by what their threads run) or from its own history."""
    case, truth = _case(tmp_path, "imbalance", IMBALANCE)
    assert truth["fault_id"] is None
    rep = outpost(case / "traces", split=truth["inject_time"])
    assert not rep.anomalous and rep.ranking == ()
    bare = _bare(tmp_path, case, capsys)
    assert bare["anomalous"] is False and bare["ranking"] == []
    # what separates the stages: each thread's class (what it and its rank run); stage 3 has the head and loss
    f = with_busy(build(read_traces(case / "traces")))
    assert f.thread_class is not None
    by_rank = {f.table.workers[w].component: f.thread_class[th] for th, (w, _, name) in enumerate(f.table.threads)
               if name == "stream 7"}
    assert len({by_rank[f"rank-{r}"] for r in (3, 7, 11, 15)}) == 1
    assert by_rank["rank-3"] != by_rank["rank-2"] and by_rank["rank-1"] == by_rank["rank-2"] != by_rank["rank-0"]


def test_a_whole_node_is_named_first(tmp_path: Path, capsys) -> None:
    case, truth = _case(tmp_path, "node", NODE)
    assert truth["component"] == "node-1"
    result = run_detector("outpost", detect, CaseView(case))
    assert result.status == "ok", result.error
    comps = result.components()
    assert comps[0] == "node-1"
    assert set(comps[1:5]) == {"rank-4", "rank-5", "rank-6", "rank-7"}
    bare = _bare(tmp_path, case, capsys)  # no topology: rank level, the node's ranks on top
    assert {r["component"] for r in bare["ranking"][:4]} == {"rank-4", "rank-5", "rank-6", "rank-7"}


def test_real_node_fault_names_the_node() -> None:
    """cpu-contention on node-1 of the smoke run (ranks 2 and 3): the node is named, its ranks below."""
    real = Path(__file__).resolve().parents[2] / "fixtures" / "real" / "cpu-contention"
    result = run_detector("outpost", detect, CaseView(real))
    assert result.status == "ok", result.error
    assert result.components()[:3] in (["node-1", "rank-2", "rank-3"], ["node-1", "rank-3", "rank-2"])


def test_waits_by_name_and_by_stream(tmp_path: Path) -> None:
    case, _ = _case(tmp_path, "tp", TP)
    f = build(read_traces(case / "traces"))
    w = waits(f)
    names = np.array(f.base_names)[f.base_name]
    threads = np.array([th[2] for th in f.table.threads])[f.table.thread]
    for name in ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)",
                 "cudaDeviceSynchronize", "c10d::allreduce_"):
        assert w[names == name].all(), name
    for name in ("aten::linear", "cudaLaunchKernel", "ProfilerStep"):
        assert not w[names == name].any(), name
    assert not w[threads == "stream 7"].any()  # the compute stream: no wait there
    from chaosbench.detectors.outpost.waits import WAIT

    for name in ("nccl:recv", "nccl:send", "recv_forward", "send_backward_recv_forward", "PipelineRecv",
                 "ncclDevKernel_SendRecv", "gloo:all_reduce", "barrier", "aten::_all_gather_base"):
        assert WAIT.search(name), name
    for name in ("aten::linear", "ampere_bf16_s16816gemm", "descend_kernel", "aten::addmm"):
        assert not WAIT.search(name), name


def test_cli_on_a_case_names_the_node(tmp_path: Path, capsys) -> None:
    case, _ = _case(tmp_path, "node", NODE)
    assert main(["detect", "outpost", str(case), "--json"]) == 0
    ranking = json.loads(capsys.readouterr().out)["ranking"]
    assert ranking[0]["component"] == "node-1" and ranking[0]["cause"] is True


@pytest.mark.parametrize("lay", [Layout(seed=20), Layout(dp=1, pp=1, tp=4, seed=20), Layout(dp=2, pp=2, tp=2, seed=20)],
                         ids=["dp4xpp4", "tp4", "dp2xpp2xtp2"])
def test_clean_layouts_raise_no_anomaly(tmp_path: Path, lay: Layout) -> None:
    """The pipeline's own bubbles (stage 0 waits for the whole backward, every step) are structure: with
    or without a history, no clean layout is flagged."""
    case, truth = _case(tmp_path, "clean", lay)
    assert not outpost(case / "traces", split=truth["inject_time"]).anomalous
    assert not outpost(case / "traces").anomalous
