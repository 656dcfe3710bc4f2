"""reuse_freed_memory: a no-op for results, and glibc's defaults come back even when the body fails."""

from __future__ import annotations

import numpy as np
import pytest

from chaosbench.detectors.outpost import heap


def test_results_and_errors_pass_through(monkeypatch) -> None:
    calls: list[tuple[str, tuple]] = []

    class FakeLibc:
        def mallopt(self, *a) -> int:
            calls.append(("mallopt", a))
            return 1

        def malloc_trim(self, *a) -> int:
            calls.append(("malloc_trim", a))
            return 1

    monkeypatch.setattr(heap, "_libc", lambda: FakeLibc())
    with pytest.raises(ValueError, match="boom"):
        with heap.reuse_freed_memory():
            with heap.reuse_freed_memory():  # nested (a serial read inside an outer block): the outer one rules
                raise ValueError("boom")
    assert calls == [("mallopt", (heap.M_MMAP_MAX, 0)), ("mallopt", (heap.M_TRIM_THRESHOLD, 2**31 - 1)),
                     ("mallopt", (heap.M_MMAP_MAX, heap.DEFAULT_MMAP_MAX)),
                     ("mallopt", (heap.M_TRIM_THRESHOLD, heap.DEFAULT_TRIM_THRESHOLD)), ("malloc_trim", (0,))]


def test_real_libc_keeps_values() -> None:
    x = np.arange(3_000_000, dtype=np.float64)
    with heap.reuse_freed_memory():
        y = np.sort(x[::-1] * 2.0)
    assert np.array_equal(y, x * 2.0)
