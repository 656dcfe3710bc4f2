"""Which GPU of which node each rank runs on, from what the cluster reports (never assumed).

The fault agent's ``locate`` lists, per node, the vLLM worker processes of this run (found by the
``CHAOSBENCH_RAYSERVICE`` variable the Ray pods carry) with the GPU NVML reports for each, and whether
the engine (the Serve LLM replica that drives the workers) runs there. Ranks then follow vLLM's own
rule (vllm/v1/executor/ray_executor.py, ``sort_by_driver_then_worker_ip``): workers on the engine's
node first, then nodes with fewer workers, then by node IP; on a node, local rank k uses the k-th of
the node's GPUs in CUDA order, which for one GPU model is PCI bus order. Inside one engine vLLM numbers
ranks stage-major (rank = pipeline rank x tensor_parallel + tensor rank), the scenario's layout; replica d
(a Serve replica: its own engine) holds the d-th block of pipeline_parallel x tensor_parallel ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chaosbench.backends.k8s.settings import K8sSettings
from chaosbench.errors import InputInvalid, PreflightFailed


@dataclass(frozen=True)
class GpuSlot:
    node: str  # chaosbench node-<i>
    uuid: str  # NVML UUID: dcgm-exporter's UUID label, nvidia-smi -i accepts it
    index: int = -1  # nvidia-smi index on the host (-1: not known yet)
    pid: int = 0  # the vLLM worker process on it (host PID)


@dataclass(frozen=True)
class Placement:
    ranks: tuple[GpuSlot, ...]
    source: str  # "cluster": reported by the fault agents; "expected": the dry-run's stand-in, not for faults

    def node(self, rank: int) -> str:
        return self.ranks[rank].node

    def gpu(self, rank: int) -> str:
        return self.ranks[rank].uuid

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "ranks": {f"rank-{r}": {"node": g.node, "gpu_uuid": g.uuid, "index": g.index}
                                                 for r, g in enumerate(self.ranks)}}


def check_replicas_fit(s: K8sSettings) -> None:
    """With data_parallel > 1 each replica's pipeline_parallel x tensor_parallel GPUs must fit on one node (in the
    scenario's contiguous blocks): which worker serves which replica is not visible across nodes (from_located)."""
    if s.data_parallel > 1 and s.gpus_per_node % s.gpus_per_replica:
        raise InputInvalid(f"data_parallel {s.data_parallel} with {s.gpus_per_replica} GPUs per replica "
                           f"(pipeline_parallel {s.pipeline_parallel} x tensor_parallel {s.tensor_parallel}) on "
                           f"nodes of {s.gpus_per_node} GPUs: a replica would span nodes; use fewer nodes, or "
                           "data_parallel 1 for a replica that spans nodes")


def expected(s: K8sSettings) -> Placement:
    """The dry-run's placement: contiguous blocks, GPUs named by placeholders the run replaces."""
    return Placement(tuple(GpuSlot(s.rank_node(r), f"{{gpu_uuid:rank-{r}}}") for r in range(s.world_size)),
                     "expected")


def from_located(s: K8sSettings, located: dict[str, dict[str, Any]], pod_ips: dict[str, str]) -> Placement:
    """Placement from each node's ``fault_agent.py locate`` answer; PreflightFailed when it does not add up."""
    found = sum(len(v.get("workers", [])) for v in located.values())
    if found != s.world_size:
        per_node = ", ".join(f"{n}: {len(v.get('workers', []))}" for n, v in sorted(located.items()))
        raise PreflightFailed(f"the cluster reports {found} vLLM worker processes ({per_node}), the scenario has "
                              f"{s.world_size} ranks: cannot map ranks to GPUs")
    engines = [n for n, v in located.items() if v.get("engines", 0)]
    if s.data_parallel == 1:
        if len(engines) != 1:
            raise PreflightFailed(f"one vLLM engine expected, the cluster reports engines on {engines or 'no node'}")
        engine = engines[0]
        count = {n: len(v.get("workers", [])) for n, v in located.items()}
        order = sorted((n for n in located if count[n]), key=lambda n: (n != engine, count[n], pod_ips.get(n, "")))
    else:
        for n, v in located.items():
            workers, replicas = len(v.get("workers", [])), int(v.get("engines", 0))
            if workers != replicas * s.gpus_per_replica:
                raise PreflightFailed(f"{n}: {workers} vLLM workers for {replicas} engine(s) of {s.gpus_per_replica} "
                                      f"GPUs (pipeline_parallel x tensor_parallel): with data_parallel > 1 every "
                                      "replica must sit on one node (which worker serves which replica is not "
                                      "visible across nodes)")
        order = sorted(located)
    slots = []
    for n in order:
        workers = sorted(located[n]["workers"], key=lambda w: (str(w.get("bus_id", "")).lower(), int(w["index"])))
        slots += [GpuSlot(n, str(w["uuid"]), int(w["index"]), int(w.get("pid", 0))) for w in workers]
    return Placement(tuple(slots), "cluster")
