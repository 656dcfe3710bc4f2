"""The fault injector interface (harness/faults/base.py) on a cluster, one adapter for every fault id.

``K8sInjector(client, settings, actions)`` has the same five steps as a local fault
module (preflight, prepare, inject, verify, recover), driven by the FaultAction that
faults.plan_faults rendered for the step: Chaos Mesh objects are created, watched for
``AllInjected`` and deleted; fault-agent commands run in the agent pod of the target
node. The handle is JSON (the step's action), so recovery works from the journal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chaosbench.backends.k8s.faults import AgentCommand, FaultAction
from chaosbench.errors import PreflightFailed
from chaosbench.faults.base import Evidence, Handle
from chaosbench.faults.catalog import get_fault

if TYPE_CHECKING:
    from chaosbench.backends.base import Testbed
    from chaosbench.backends.k8s.client import K8sClient
    from chaosbench.scenario import FaultStep


class K8sHandle(Handle):
    backend: str  # "k8s": the journal replays it with recover_from_handle
    step: int
    namespace: str
    kubeconfig: str | None
    action: dict[str, Any]  # FaultAction.to_json() plus the chaos objects themselves


def _commands(items: list[dict[str, Any]]) -> list[AgentCommand]:
    return [AgentCommand(c["node"], tuple(c["argv"])) for c in items]


class K8sInjector:
    """One fault id's injector for the k8s backend (duck-types chaosbench.faults.base.Injector)."""

    def __init__(self, fault_id: str, client: K8sClient, actions: list[FaultAction], kubeconfig: str | None = None):
        self.SPEC = get_fault(fault_id)
        self.client = client
        self.actions = actions
        self.kubeconfig = kubeconfig
        self._node_map: dict[str, str] | None = None

    def node_map(self) -> dict[str, str]:
        if self._node_map is None:
            self._node_map = self.client.node_map()
        return self._node_map

    def _action(self, step: FaultStep) -> FaultAction:
        for action in self.actions:
            if action.fault_id == step.id and action.component == step.target.component \
                    and action.start_s == step.start:
                return action
        raise PreflightFailed(f"{step.id} on {step.target.component}: not in the rendered fault plan")

    def preflight(self, testbed: Testbed, step: FaultStep) -> None:
        action = self._action(step)
        if action.node not in self.node_map():
            raise PreflightFailed(f"{step.id}: no Kubernetes node labelled {action.node}")
        for cmd in action.agent_inject:
            self.client.agent_pod(cmd.node, self.node_map())

    def prepare(self, testbed: Testbed, step: FaultStep, key: str) -> K8sHandle:
        action = self._action(step)
        doc = {**action.to_json(), "chaos_objects": [dict(o) for o in action.chaos_objects]}
        return K8sHandle(fault_id=step.id, key=key, component=action.component, backend="k8s", step=action.step,
                         namespace=self.client.namespace, kubeconfig=self.kubeconfig, action=doc)

    def inject(self, handle: K8sHandle, testbed: Testbed) -> K8sHandle:
        for obj in handle["action"]["chaos_objects"]:
            self.client.create_chaos(obj)
        for cmd in _commands(handle["action"]["agent_inject"]):
            self.client.run_agent(cmd.node, cmd.argv, self.node_map())
        return handle

    def verify(self, handle: K8sHandle, testbed: Testbed) -> Evidence | None:
        """Evidence once every Chaos Mesh object is AllInjected and every agent verify says so."""
        seen: list[str] = []
        for obj in handle["action"]["chaos_objects"]:
            if not self.client.chaos_injected(obj):
                return None
            seen.append(f"{obj['kind']}/{obj['metadata']['name']} AllInjected")
        extra: dict[str, float] = {}
        for cmd in _commands(handle["action"]["agent_verify"]):
            answer = self.client.run_agent(cmd.node, cmd.argv, self.node_map())
            if not answer.get("verified"):
                return None
            seen.append(f"agent {cmd.node}: " + ", ".join(f"{k}={v}" for k, v in answer.items() if k != "verified"))
            extra.update({k: float(v) for k, v in answer.items() if isinstance(v, (int, float)) and k != "verified"})
        signal = "+".join(handle["action"]["mechanisms"])
        return Evidence(signal, 1.0, f"{handle['component']}: " + "; ".join(seen), extra)

    def recover(self, handle: K8sHandle) -> None:
        """Idempotent: deleting a gone object and recovering a recovered agent fault are no-ops."""
        errors = []
        for obj in handle["action"]["chaos_objects"]:
            try:
                self.client.delete_chaos(obj)
            except PreflightFailed as exc:
                errors.append(str(exc))
        for cmd in _commands(handle["action"]["agent_recover"]):
            try:
                self.client.run_agent(cmd.node, cmd.argv, self.node_map())
            except Exception as exc:  # noqa: BLE001 - try every recovery, report all
                errors.append(str(exc))
        if errors:
            raise RuntimeError("; ".join(errors))


def recover_from_handle(handle: K8sHandle, client: K8sClient | None = None) -> None:
    """Recovery after a crash, from the journalled handle alone (``chaosbench cleanup``)."""
    if client is None:
        from chaosbench.backends.k8s.client import K8sClient

        client = K8sClient(handle["namespace"], kubeconfig=handle.get("kubeconfig"))
    K8sInjector(handle["fault_id"], client, []).recover(handle)
