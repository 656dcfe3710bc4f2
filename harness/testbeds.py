"""The testbed a case runs on: deployed by its backend (chaosbench.backends) (and checked against the backend
contract), reused by the next case of the same group if the recovery gate (chaosbench.gate) passes, else torn
down and redeployed. A teardown runs to its end: SIGINT/SIGTERM are held back until it is done."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaosbench import signals
from chaosbench.backends.base import Testbed, check_testbed
from chaosbench.stages import Recorder

if TYPE_CHECKING:
    from chaosbench.gate import Probe
    from chaosbench.rundir import CaseJob
    from chaosbench.scenario import Scenario

Log = Callable[[str], None]


@dataclass
class Bed:
    """A deployed testbed and what the recovery gate compares it with."""

    testbed: Testbed
    group: str
    reference: Probe | None = None  # the gate's probe of the new testbed (reusable testbeds only)
    last_case: str | None = None
    cases: int = 0
    down: bool = False


def deploy(scenario: Scenario, run_dir: Path, rec: Recorder, group: str,
           deploy_kwargs: dict[str, Any] | None) -> Bed:
    """Deploy the scenario's backend (journalled as stage ``deploy``); a reusable testbed is probed once."""
    from chaosbench.backends import backend
    from chaosbench.registry import import_ref

    dep = scenario.spec.deployment
    with rec.stage("deploy", backend=dep.backend, engine=dep.engine):
        deploy_testbed = import_ref(backend(dep.backend).deploy)
        testbed = deploy_testbed(scenario, run_dir, **(deploy_kwargs or {}))
        bed = Bed(check_testbed(dep.backend, testbed), group)
    if bed.testbed.reusable:
        from chaosbench.gate import baseline

        bed.reference = baseline(bed.testbed.api_url, dep.model.name)
    return bed


def teardown(bed: Bed, log: Log) -> str:
    """Tear the testbed down (once); returns what was left, in words."""
    if bed.down:
        return "nothing (already torn down)"
    with signals.held():
        left = bed.testbed.teardown()
        bed.down = True
    text = left.describe()
    log(f"testbed torn down after {bed.cases} case(s); left: {text}")
    return text


def ready_bed(job: CaseJob, bed: Bed | None, testbeds: Path, rec: Recorder, deploy_kwargs: dict[str, Any] | None,
              log: Log) -> Bed:
    """The testbed for ``job``: the current one if it serves the same deployment and passes the recovery gate,
    else a new one under ``testbeds`` (the old one torn down first)."""
    from chaosbench import gate

    writer = rec.writer
    if bed is not None and (bed.group != job.group or not bed.testbed.reusable or bed.reference is None):
        teardown(bed, log)
        bed = None
    if bed is not None and bed.reference is not None:
        with rec.stage("testbed.gate"):
            why, detail = gate.recovery_gate(bed.testbed, job.scenario.spec.deployment.model.name, bed.reference,
                                             bed.last_case)
        writer.event("testbed.gate", "point", "failed" if why else "ok", detail=detail,
                     **({"error": why} if why else {}))
        if why is None:
            writer.event("deploy", "point", detail={"reused": True, "cases_before": bed.cases})
            return bed
        log(f"case {job.case_id}: recovery gate failed ({why}); redeploying")
        writer.event("testbed.redeploy", "point", detail={"reason": why})
        teardown(bed, log)
    n = len(list(testbeds.glob("tb-*"))) if testbeds.is_dir() else 0
    return deploy(job.scenario, testbeds / f"tb-{n}", rec, job.group, deploy_kwargs)
