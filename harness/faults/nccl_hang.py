"""nccl-hang: one rank blocks inside the collective for the fault's duration; its peers wait in it.

Two mechanisms (``params.mode``):
- ``collective`` (default, what a real hang looks like): ``collective_hang`` in the rank's device control
  file; the rank blocks inside its next all-reduce before its part reaches the transport, while its process,
  exporter and device stay alive (utilisation reads busy). Verify: the rank's exporter still answers and its
  GPU reads busy, but its all-reduce count has stopped after having moved (Evidence.at: the first scrape that
  saw it stopped). Recover: the previous control values (the collective completes).
- ``sigstop`` (a stopped process, not a hang: the exporter goes silent too): SIGSTOP of the rank's worker,
  SIGCONT on recovery. The handle records the pid with its kernel start time, so SIGCONT (also from the
  journal after a crash) only ever reaches that same process. Verify: the process is in state T (stopped).
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Any, Literal, NotRequired

from pydantic import Field

from chaosbench.backends.base import Testbed
from chaosbench.faults import targets
from chaosbench.faults.base import Evidence, Handle, base_handle
from chaosbench.faults.mech import device, procs
from chaosbench.faults.spec import FaultSpec, Params

if TYPE_CHECKING:
    from chaosbench.backends.k8s.faults import ClusterKit, ClusterParts
    from chaosbench.scenario import FaultStep


class NcclHangParams(Params):
    mode: Literal["collective", "sigstop"] = Field(
        "collective", description="collective: the rank blocks inside the collective, process and exporter alive "
                                  "(a real hang); sigstop: the whole rank process is stopped, then SIGCONT")


SPEC = FaultSpec(
    id="nccl-hang",
    fault_class="NCCL",
    description="One tensor-parallel worker stops responding: its peers block inside the collective.",
    target="rank",
    params=NcclHangParams,
    cluster_mechanism="kill -STOP one TP worker for the fault's duration, then -CONT",
    local_mechanism="mode collective: the rank blocks inside the all-reduce before its part reaches the "
                    "transport, process and exporter alive; mode sigstop: SIGSTOP of the rank process",
    local_realism="real",
    verify_signal="collective: the rank's exporter answers, its GPU reads busy, its all-reduce count stops; "
                  "sigstop: the process is in state T",
    recovery="the collective completes (collective); SIGCONT (sigstop)",
    seen_in=("traces", "metrics"),
    key_metrics=("allreduce", "collective", "step"),
    # vLLM's custom all-reduce bypasses NCCL inside a node: the fault would not bite (FAULTS.md)
    cluster_engine_kwargs={"disable_custom_all_reduce": True},
)

ALLREDUCES = "chaosbench_rank_allreduce_seconds_count"
STALLED_SCRAPES = 3  # consecutive scrapes with the same count after a move: the collective no longer completes
BUSY_PCT = 50.0


class NcclHangHandle(Handle):
    mode: str
    pid: NotRequired[int]
    started: NotRequired[int | None]  # kernel start time of pid: guards against a reused pid
    control_file: NotRequired[str]
    previous: NotRequired[dict[str, Any]]
    injected_at: NotRequired[float]


def preflight(testbed: Testbed, step: FaultStep) -> None:
    if step.params.mode == "sigstop":
        targets.rank_pid(testbed, step)
    else:
        device.check_control_dir(SPEC.id, testbed, targets.rank(testbed, step).name)


def prepare(testbed: Testbed, step: FaultStep, key: str) -> NcclHangHandle:
    base = base_handle(SPEC, step, key)
    if step.params.mode == "sigstop":
        pid = targets.rank_pid(testbed, step)
        return NcclHangHandle(**base, mode="sigstop", pid=pid, started=procs.start_time(pid))
    path = device.control_path(testbed, targets.rank(testbed, step).name)
    return NcclHangHandle(**base, mode="collective", control_file=path,
                          previous=device.previous(path, ["collective_hang"]))


def inject(handle: NcclHangHandle, testbed: Testbed) -> NcclHangHandle:
    handle["injected_at"] = time.time()
    if handle["mode"] == "sigstop":
        if not procs.send(handle["pid"], handle["started"], signal.SIGSTOP):
            raise RuntimeError(f"{handle['component']} (pid {handle['pid']}) is gone; cannot stop it")
    else:
        device.apply(handle["control_file"], {"collective_hang": True})
    return handle


def verify(handle: NcclHangHandle, testbed: Testbed) -> Evidence | None:
    if handle["mode"] == "sigstop":
        return _verify_stopped(handle)
    rank = handle["component"]
    samples = _raw_samples(testbed.prometheus_url, device.series(ALLREDUCES, rank), handle.get("injected_at", 0.0))
    stalled_at = stalled_since(samples, STALLED_SCRAPES)
    if stalled_at is None or samples[-1][0] < time.time() - 3.0:  # the exporter must still answer
        return None
    util = device.query(testbed.prometheus_url, device.series("DCGM_FI_DEV_GPU_UTIL", rank))
    if util is None or util < BUSY_PCT:
        return None
    return Evidence("all-reduce count", samples[-1][1],
                    f"{rank}: no all-reduce completed for {samples[-1][0] - stalled_at:.0f} s while its exporter "
                    f"answers and its GPU reads {util:.0f} % busy", {"gpu_util": util}, at=stalled_at)


def stalled_since(samples: list[tuple[float, float]], scrapes: int) -> float | None:
    """Time of the first sample of the final run of equal values, when that run has at least ``scrapes``
    samples and the value moved before it (a counter that never moved is an idle rank, not a hang)."""
    if len(samples) < scrapes + 1:
        return None
    last = samples[-1][1]
    i = len(samples) - 1
    while i > 0 and samples[i - 1][1] == last:
        i -= 1
    if i == 0 or len(samples) - i < scrapes:
        return None
    return samples[i][0]


def _raw_samples(prometheus_url: str | None, series_sel: str, since: float) -> list[tuple[float, float]]:
    """The raw scraped samples of one series from ``since - 10 s`` until now."""
    if not prometheus_url:
        return []
    import httpx

    window = max(1, int(time.time() - since) + 10)
    try:
        r = httpx.get(f"{prometheus_url.rstrip('/')}/api/v1/query",
                      params={"query": f"{series_sel}[{window}s]"}, timeout=3.0)
        result = r.json()["data"]["result"]
    except (httpx.HTTPError, KeyError, ValueError):
        return []
    if not result:
        return []
    return [(float(t), float(v)) for t, v in result[0]["values"]]


def _verify_stopped(handle: NcclHangHandle) -> Evidence | None:
    if not procs.same_process(handle["pid"], handle["started"]):
        return None
    st = procs.state(handle["pid"])
    if st not in ("T", "t"):
        return None
    return Evidence("process state", 1.0, f"{handle['component']} pid {handle['pid']} is stopped (state {st})")


def recover(handle: NcclHangHandle) -> None:
    if handle.get("mode", "sigstop") == "sigstop":  # journals written before the mode existed were SIGSTOPs
        procs.send(handle["pid"], handle["started"], signal.SIGCONT)
    else:
        device.restore(handle["control_file"], handle["previous"])


def cluster(step: FaultStep, kit: ClusterKit) -> ClusterParts:
    return {**kit.agent("sigstop"), "evidence_query": f"sum({kit.ray_metric('vllm:num_requests_running')})",
            "notes": ("SIGSTOP of the vLLM worker on the GPU; SIGCONT on recovery",)}
