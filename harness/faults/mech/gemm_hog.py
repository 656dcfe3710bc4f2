"""A GEMM loop that keeps one core busy: the local stand-in for another workload on the rank's GPU.

Run: ``python -m chaosbench.faults.mech.gemm_hog --size 256`` (one BLAS thread; pinning and cgroup come from
the parent that starts it). numpy, not torch: it starts in a fraction of the time.
"""

from __future__ import annotations

import argparse
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def main() -> None:
    ap = argparse.ArgumentParser(description="GEMM hog")
    ap.add_argument("--size", type=int, default=256)
    size = ap.parse_args().size

    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty_like(a)
    while True:
        np.matmul(a, b, out=c)


if __name__ == "__main__":
    main()
