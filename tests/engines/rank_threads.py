"""Run one function per rank, each in its own thread (in-process gloo groups), and re-raise any rank's error."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_ranks(size: int, fn: Callable[[int], None], timeout_s: float = 60.0) -> None:
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            fn(rank)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout_s)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), f"a rank is still running after {timeout_s:.0f}s"
