"""Find the cases under a dataset directory, in either layout, and check each one cheaply.

- chaosbench layout: directories with manifest.json (harness.case); ``<case>.partial`` directories are
  reported as incomplete.
- RCAEval layout: ``<service>_<fault>/<run>/data.csv`` + ``inject_time.txt`` (logs.csv/traces.csv optional);
  the ground truth is the folder name, as RCAEval reads it: the service is the component, the rest the fault.

A case that cannot be evaluated (no data.csv, unreadable inject time, inject time outside the data) is kept
with its ``problem``: it is reported, never scored, and never stops the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from harness.case import PARTIAL_SUFFIX, CaseView, GroundTruth, Topology, is_case_dir, read_ground_truth
from harness.errors import CaseInvalid, InputInvalid

Layout = Literal["chaosbench", "rcaeval"]


@dataclass(frozen=True)
class CaseRef:
    id: str  # path relative to the dataset root
    path: Path
    layout: Layout
    status: str  # manifest status (completed, not-verified, ...) or "invalid"
    problem: str | None = None


class RCAEvalCaseView(CaseView):
    """A CaseView over RCAEval's layout: no manifest or topology files, components from the columns."""

    def __init__(self, path: Path):  # noqa: D107 - the parent's manifest check does not apply here
        self._path = Path(path)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return {"status": "completed", "layout": "rcaeval"}

    @cached_property
    def topology(self) -> Topology:
        from baselines.inputs import metric_columns, split_column

        comps = tuple(dict.fromkeys(split_column(c)[0] for c in metric_columns(self)))
        return Topology("external", "unknown", (), (), {}, comps)


def open_view(ref: CaseRef) -> CaseView:
    return RCAEvalCaseView(ref.path) if ref.layout == "rcaeval" else CaseView(ref.path)


def rcaeval_truth(path: Path) -> GroundTruth:
    service, _, fault = Path(path).parent.name.partition("_")
    return GroundTruth(fault_id=fault or None, fault_class=fault or None, component=service, node=None, rank=None,
                       start=None, end=None, mechanism=None, realism="real", verified=True)


def ground_truth(ref: CaseRef) -> GroundTruth:
    return rcaeval_truth(ref.path) if ref.layout == "rcaeval" else read_ground_truth(ref.path)


def _problem(view: CaseView) -> str | None:
    """Why the case cannot be evaluated, or None. Reads the time column only."""
    import pandas as pd

    f = view.path / "data.csv"
    if not f.is_file():
        return "data.csv missing"
    try:
        times = pd.read_csv(f, usecols=["time"])["time"]
        inject = view.inject_time
    except CaseInvalid as exc:
        return str(exc)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        return f"data.csv unreadable or without a time column ({str(exc).splitlines()[0]})"
    times = pd.to_numeric(times, errors="coerce").dropna()
    if times.empty:
        return "data.csv has no rows"
    if not times.min() < inject <= times.max():
        return f"inject time {inject:.0f} outside the data ({times.min():.0f}..{times.max():.0f})"
    return None


def _native(root: Path, path: Path) -> CaseRef:
    rel = str(path.relative_to(root)) if path != root else path.name
    view = CaseView(path)
    try:
        status = str(view.manifest.get("status", "completed"))
    except CaseInvalid as exc:
        return CaseRef(rel, path, "chaosbench", "invalid", str(exc))
    problem = _problem(view)
    if problem is None and not (path / "ground_truth.json").is_file():
        problem = "ground_truth.json missing"
    return CaseRef(rel, path, "chaosbench", "invalid" if problem else status, problem)


def _external(root: Path, path: Path) -> CaseRef:
    rel = str(path.relative_to(root)) if path != root else path.name
    problem = _problem(RCAEvalCaseView(path))
    return CaseRef(rel, path, "rcaeval", "invalid" if problem else "completed", problem)


def discover(root: Path) -> list[CaseRef]:
    """Every case under ``root`` (sorted by id). Raises InputInvalid when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise InputInvalid(f"{root}: not a directory")
    refs: dict[Path, CaseRef] = {}
    candidates = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
    for d in candidates:
        if any(part.endswith(PARTIAL_SUFFIX) or part == "detectors" for part in d.relative_to(root).parts[:-1]):
            continue
        if d.name.endswith(PARTIAL_SUFFIX):
            rel = str(d.relative_to(root)) if d != root else d.name
            refs[d] = CaseRef(rel, d, "chaosbench", "invalid", "incomplete case (.partial: the run did not finish)")
        elif is_case_dir(d):
            refs[d] = _native(root, d)
        elif (d / "inject_time.txt").is_file() and "_" in d.parent.name:
            refs[d] = _external(root, d)
    if not refs:
        raise InputInvalid(f"{root}: no cases (no case directory with manifest.json, and no RCAEval "
                           "<service>_<fault>/<run>/ with data.csv + inject_time.txt)")
    return sorted(refs.values(), key=lambda r: r.id)
