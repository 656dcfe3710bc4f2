"""DP x PP x TP layouts: rank blocks, names an operator sees, node placement, stage layers."""

from __future__ import annotations

from itertools import chain

import pytest

from chaosbench.layout import Layout


def test_global_rank_convention_round_trips() -> None:
    lay = Layout(dp=2, pp=2, tp=2, nodes=2)
    assert lay.world_size == 8 and lay.replica_size == 4
    for r in range(lay.world_size):
        c = lay.coord(r)
        assert lay.rank(c.replica, c.stage, c.tp_index) == r == (c.replica * 2 + c.stage) * 2 + c.tp_index
    assert (lay.coord(5).replica, lay.coord(5).stage, lay.coord(5).tp_index) == (1, 0, 1)


@pytest.mark.parametrize(("dp", "pp", "tp"), [(2, 1, 4), (2, 2, 2), (1, 4, 2), (4, 1, 2), (1, 2, 2)])
def test_replicas_own_contiguous_rank_blocks(dp: int, pp: int, tp: int) -> None:
    lay = Layout(dp=dp, pp=pp, tp=tp)
    blocks = [lay.replica_ranks(d) for d in range(dp)]
    assert list(chain(*blocks)) == list(range(lay.world_size))
    for d, block in enumerate(blocks):
        assert [lay.local_rank(r) for r in block] == list(range(pp * tp))  # each replica: its own world
        stages = [lay.stage_ranks(d, p) for p in range(pp)]
        assert list(chain(*stages)) == block
        assert all(lay.coord(r).stage == p for p, ranks in enumerate(stages) for r in ranks)


def test_component_names_have_no_underscore() -> None:
    lay = Layout(dp=2, pp=2, tp=2, nodes=2)
    assert lay.record()["ranks"]["rank-6"] == {"replica": 1, "stage": 1, "tp_index": 0, "node": "node-1"}
    assert (lay.coord(6).replica_name, lay.coord(6).stage_name) == ("replica-1", "replica-1.stage-1")
    names = [*lay.replica_names(), *lay.stage_names()]
    assert names == ["replica-0", "replica-1", "replica-0.stage-0", "replica-0.stage-1", "replica-1.stage-0",
                     "replica-1.stage-1"]
    assert not any("_" in n for n in names)


def test_nodes_take_contiguous_rank_blocks() -> None:
    assert [Layout(dp=2, pp=1, tp=4, nodes=2).rank_node(r) for r in range(8)] == ["node-0"] * 4 + ["node-1"] * 4
    assert [Layout(dp=1, pp=1, tp=4, nodes=2).rank_node(r) for r in range(4)] == ["node-0", "node-0", "node-1",
                                                                                   "node-1"]
    assert [Layout(dp=1, pp=4, tp=2, nodes=4).rank_node(r) for r in range(0, 8, 2)] == [f"node-{i}" for i in range(4)]


def test_stage_layers_split_the_model() -> None:
    lay = Layout(pp=4, tp=2)
    assert [list(lay.stage_layers(p, 8)) for p in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert Layout(dp=1, pp=1, tp=4).single_group and not Layout(dp=2, tp=2).single_group and not Layout(pp=2).single_group
    assert Layout(dp=2, pp=2, tp=2).label() == "2x2x2"


def test_out_of_layout_ranks_are_refused() -> None:
    lay = Layout(dp=2, pp=2, tp=2)
    with pytest.raises(ValueError):
        lay.coord(8)
    with pytest.raises(ValueError):
        lay.rank(0, 2, 0)
    with pytest.raises(ValueError):
        Layout(dp=0)
