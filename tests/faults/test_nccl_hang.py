"""nccl-hang's verify rule (no testbed): a counter that moved and then stood still for N scrapes."""

from __future__ import annotations

from chaosbench.faults.nccl_hang import NcclHangParams, stalled_since


def test_stalled_since_needs_a_move_then_n_equal_scrapes() -> None:
    moving = [(float(t), float(t * 10)) for t in range(6)]
    assert stalled_since(moving, 3) is None  # still completing collectives
    hung = moving + [(6.0, 50.0), (7.0, 50.0), (8.0, 50.0)]
    assert stalled_since(hung, 3) == 5.0  # the first scrape that saw the final count
    assert stalled_since(hung[:-2], 3) is None  # not yet long enough
    idle = [(float(t), 7.0) for t in range(10)]
    assert stalled_since(idle, 3) is None  # never moved: an idle rank, not a hang
    assert stalled_since([], 3) is None


def test_default_mechanism_is_the_live_hang() -> None:
    assert NcclHangParams().mode == "collective"
    assert NcclHangParams(mode="sigstop").mode == "sigstop"
