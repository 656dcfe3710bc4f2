"""From a scenario, suite or campaign file to the list of cases a run executes (chaosbench.rundir.CaseJob).

Each job carries its plan entry (``draw``): split, faults, topology, workload, intensity, target kind. For a
campaign the entry comes from the sampler (chaosbench.campaign); for a suite or a scenario it is read off the
scenario. Ids are new on a fresh run and read back from plan.json on a resumed one, so a resumed run redoes
its unfinished cases with the same draw under the same ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chaosbench.rundir import CaseJob, new_case_id


def _topology_name(scenario: Any) -> str:
    t = scenario.spec.deployment.topology
    pp = f"-pp{t.pipeline_parallel}" if t.pipeline_parallel > 1 else ""
    return f"{t.nodes}n-dp{t.data_parallel}{pp}-tp{t.tensor_parallel}"


def _scenario_draw(scenario: Any) -> dict[str, Any]:
    faults = [{"id": f.id, "target": f.target.model_dump(exclude_none=True), "params": f.params.model_dump(),
               "start": f.start, "duration": f.duration} for f in scenario.spec.faults]
    kind = scenario.spec.faults[0].target.kind if faults else None
    workload = scenario.spec.workload.model_dump(include={"users", "qps", "arrival", "duration"})
    return {"split": None, "faults": faults, "topology": _topology_name(scenario), "workload": workload,
            "intensity": None, "target_kind": kind}


def _ids(n: int, known: dict[int, str] | None) -> list[str]:
    return [known[i] if known and i in known else new_case_id() for i in range(n)]


def scenario_jobs(scenarios: list[Any], known_ids: dict[int, str] | None = None) -> list[CaseJob]:
    from chaosbench.campaign import deployment_key

    ids = _ids(len(scenarios), known_ids)
    return [CaseJob(i, ids[i], s, deployment_key(s), _scenario_draw(s)) for i, s in enumerate(scenarios)]


def suite_jobs(suite: Any, suite_path: Path, known_ids: dict[int, str] | None = None) -> list[CaseJob]:
    from chaosbench.runner import with_seed
    from chaosbench.scenario import expand_suite

    return scenario_jobs([with_seed(s, seed) for s, _rep, seed in expand_suite(suite, Path(suite_path))], known_ids)


def campaign_jobs(campaign: Any, campaign_path: Path, known_ids: dict[int, str] | None = None,
                  salt: int | None = None) -> list[CaseJob]:
    """``salt``: the run's secret for the observable draws (chaosbench.campaign.draw), kept in run.json."""
    from chaosbench.campaign import deployment_key, plan, to_scenario

    cases = plan(campaign, salt)
    ids = _ids(len(cases), known_ids)
    jobs = []
    for case in cases:
        scenario = to_scenario(campaign, case, Path(campaign_path))
        draw = {**case.to_json(), "intensity": case.intensity, "target_kind": case.target_kind}
        draw.pop("case_id", None)
        jobs.append(CaseJob(case.index, ids[case.index], scenario, deployment_key(scenario), draw))
    return jobs
