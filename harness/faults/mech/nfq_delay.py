"""NFQUEUE delay handler: hold each queued packet delay +- jitter ms, then accept it.

This kernel has no netem, so network-delay sends the node's egress packets to an NFQUEUE (with
``--queue-bypass``: if this process dies, packets pass instead of being black-holed) and this process,
started inside the node's namespace, releases them late. Jitter is correlated like netem's:
``d = corr * d_prev + (1 - corr) * sample``. Every second it writes counters to ``--status`` (JSON).

Run: ``python -m chaosbench.faults.mech.nfq_delay --queue 4242 --delay-ms 200 --jitter-ms 20 --status f.json``
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import random
import select
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netfilterqueue import Packet


def _write_status(path: Path | None, held: int, released: int) -> None:
    if path is None:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "held": held, "released": released, "t": time.time()}))
    os.replace(tmp, path)


def serve(queue_num: int, delay_ms: float, jitter_ms: float, correlation: float, status: Path | None) -> None:
    from netfilterqueue import COPY_META, NetfilterQueue

    rng = random.Random()
    pending: list[tuple[float, int, object]] = []
    order = itertools.count()
    counts = {"held": 0, "released": 0}
    last = {"d": delay_ms}

    def hold(pkt: Packet) -> None:
        sample = rng.uniform(delay_ms - jitter_ms, delay_ms + jitter_ms)
        last["d"] = correlation * last["d"] + (1 - correlation) * sample
        heapq.heappush(pending, (time.monotonic() + max(0.0, last["d"]) / 1000, next(order), pkt))
        counts["held"] += 1

    nfq = NetfilterQueue()
    nfq.bind(queue_num, hold, max_len=65536, mode=COPY_META)
    fd = nfq.get_fd()
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    next_status = 0.0
    try:
        while not stop["now"]:
            now = time.monotonic()
            while pending and pending[0][0] <= now:
                heapq.heappop(pending)[2].accept()  # type: ignore[attr-defined]
                counts["released"] += 1
            wait = min(0.2, max(0.0, pending[0][0] - now)) if pending else 0.2
            if select.select([fd], [], [], wait)[0]:
                nfq.run(block=False)
            if now >= next_status:
                _write_status(status, counts["held"], counts["released"])
                next_status = now + 1.0
    finally:
        for _, _, pkt in pending:
            pkt.accept()  # type: ignore[attr-defined]
        nfq.unbind()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queue", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("--jitter-ms", type=float, default=0.0)
    ap.add_argument("--correlation", type=float, default=0.0)
    ap.add_argument("--status", type=Path, default=None)
    a = ap.parse_args()
    serve(a.queue, a.delay_ms, a.jitter_ms, a.correlation, a.status)


if __name__ == "__main__":
    main()
