"""A child "harness" for exit-path tests: injects one fault through the lifecycle and holds it.

Run: python harness_child.py BED_JSON CASE_DIR STEP_JSON; prints INJECTED once the fault is verified.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faultbed import FaultBed, make_step  # noqa: E402

from chaosbench.case import CaseWriter  # noqa: E402
from chaosbench.faults.lifecycle import injected  # noqa: E402


def main() -> None:
    # Ctrl-C as in a terminal: a shell without job control starts background jobs (and so pytest and this child)
    # with SIGINT ignored, and the lifecycle keeps a disposition somebody set (only the runner overrides it)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bed = FaultBed.from_json(Path(sys.argv[1]).read_text())
    writer = CaseWriter(Path(sys.argv[2]))
    step = make_step(**json.loads(sys.argv[3]))
    with injected(bed, step, writer, 0):
        print("INJECTED", flush=True)
        time.sleep(120)


if __name__ == "__main__":
    main()
