"""Find the cases of a dataset, in any of its layouts, and check each one cheaply.

- run layout (``results/<run-id>/``, RULES "run layout"): ``cases/<id>/`` hold the blind cases, ``labels.jsonl``
  one record per case (case_id, index, split, status, reason, ground_truth, faults, intensity, target_kind,
  topology). Labels come from labels.jsonl only; a case listed there without a usable directory, or a directory
  not listed there, is reported, never scored.
- legacy layout: case directories with manifest.json and their labels inside (ground_truth.json); ``<case>.partial``
  directories are reported as incomplete.
- RCAEval layout: ``<service>_<fault>/<run>/data.csv`` + ``inject_time.txt`` (logs.csv/traces.csv optional);
  the ground truth is the folder name, as RCAEval reads it: the service is the component, the rest the fault.

Every case gets an opaque ``case_id``: the run's own id, or for the older layouts a hash of its path, so that the
blind copy handed to detectors (chaosbench.eval.blind) never carries a name like ``<fault id>-r0``.
A case that cannot be evaluated (no data.csv, unreadable inject time, inject time outside the data) is kept
with its ``problem``: it is reported, never scored, and never stops the others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from chaosbench.case import (
    PARTIAL_SUFFIX,
    CaseView,
    GroundTruth,
    Topology,
    is_case_dir,
    labels_dir_of,
    read_case_status,
    read_ground_truth,
)
from chaosbench.errors import CaseInvalid, InputInvalid
from chaosbench.rundir import read_labels_file

Layout = Literal["run", "chaosbench", "rcaeval"]
SPLITS = ("dev", "test", "all")
LABELS_FILE = "labels.jsonl"


@dataclass(frozen=True)
class CaseRef:
    id: str  # what reports show: the case id (run layout) or the path relative to the dataset root
    path: Path
    layout: Layout
    status: str  # completed, not-verified, failed, aborted, or "invalid"
    problem: str | None = None  # why it is not scored (the run's reason, or what is wrong with the files)
    case_id: str = ""  # opaque: the blind copy's directory name and the detector output's file name
    split: str | None = None  # dev | test (run layout); None for older layouts
    labels: dict[str, Any] | None = None  # the case's labels.jsonl record (run layout)

    @property
    def intensity(self) -> float | None:
        v = (self.labels or {}).get("intensity")
        return float(v) if isinstance(v, int | float) else None

    @property
    def target_kind(self) -> str | None:
        if self.labels is not None:
            return self.labels.get("target_kind")
        try:
            comp = ground_truth(self).get("component") or ""
        except Exception:  # noqa: BLE001 - an unreadable truth is already the case's problem
            return None
        return comp.partition("-")[0] if comp.startswith(("rank-", "node-")) else None


class RCAEvalCaseView(CaseView):
    """A CaseView over RCAEval's layout: no manifest or topology files, components from the columns."""

    def __init__(self, path: Path):
        self._path = Path(path)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return {"layout": "rcaeval"}

    @cached_property
    def topology(self) -> Topology:
        from chaosbench.baselines.inputs import metric_columns, split_column

        comps = tuple(dict.fromkeys(split_column(c)[0] for c in metric_columns(self)))
        return Topology("external", "unknown", (), (), {}, comps)


def open_view(ref: CaseRef, path: Path | None = None) -> CaseView:
    """A view of the case, or of its blind copy at ``path``."""
    where = path or ref.path
    return RCAEvalCaseView(where) if ref.layout == "rcaeval" else CaseView(where)


def rcaeval_truth(path: Path) -> GroundTruth:
    service, _, fault = Path(path).parent.name.partition("_")
    return GroundTruth(fault_id=fault or None, fault_class=fault or None, component=service, node=None, rank=None,
                       start=None, end=None, mechanism=None, realism="real", verified=True)


def ground_truth(ref: CaseRef) -> GroundTruth:
    if ref.layout == "run":
        return (ref.labels or {}).get("ground_truth") or {}  # type: ignore[return-value]
    return rcaeval_truth(ref.path) if ref.layout == "rcaeval" else read_ground_truth(ref.path)


def opaque_id(rel: str) -> str:
    return hashlib.sha256(f"chaosbench-case:{rel}".encode()).hexdigest()[:12]


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


# --------------------------------------------------------------------------- run layout


def is_run_dir(root: Path) -> bool:
    return (Path(root) / LABELS_FILE).is_file() and (Path(root) / "cases").is_dir()


def read_labels(root: Path) -> list[dict[str, Any]]:
    return read_labels_file(Path(root) / LABELS_FILE)


def _run_case(cases: Path, rec: dict[str, Any]) -> CaseRef:
    cid = rec["case_id"]
    path = cases / cid
    status, reason = str(rec.get("status") or "completed"), rec.get("reason")
    split = rec.get("split") if rec.get("split") in ("dev", "test") else None
    ref = CaseRef(cid, path, "run", status, reason, cid, split, rec)
    if status != "completed":
        return ref
    problem = None
    if not isinstance(rec.get("ground_truth"), dict):
        problem = "labels.jsonl has no ground_truth for this case"
    elif not is_case_dir(path):
        problem = "case directory missing (cases/<id>/manifest.json)"
    else:
        problem = _problem(CaseView(path))
    return CaseRef(cid, path, "run", "invalid", problem, cid, split, rec) if problem else ref


def _discover_run(root: Path, labels: list[dict[str, Any]]) -> list[CaseRef]:
    cases = root / "cases"
    refs = [_run_case(cases, rec) for rec in labels]
    listed = {r.case_id for r in refs}
    for d in sorted(cases.iterdir()) if cases.is_dir() else []:
        if d.is_dir() and d.name.removesuffix(PARTIAL_SUFFIX) not in listed:
            why = "incomplete case (.partial: the run did not finish)" if d.name.endswith(PARTIAL_SUFFIX) \
                else "not listed in labels.jsonl"
            refs.append(CaseRef(d.name, d, "run", "invalid", why, d.name.removesuffix(PARTIAL_SUFFIX)))
    return sorted(refs, key=lambda r: (r.labels is None, str((r.labels or {}).get("index", "")).zfill(9), r.case_id))


# --------------------------------------------------------------------------- older layouts


def _native(root: Path, path: Path) -> CaseRef:
    rel = str(path.relative_to(root)) if path != root else path.name
    try:
        status = read_case_status(path)
    except CaseInvalid as exc:
        return CaseRef(rel, path, "chaosbench", "invalid", str(exc), opaque_id(rel))
    problem = _problem(CaseView(path))
    if problem is None and not (labels_dir_of(path) / "ground_truth.json").is_file():
        problem = "ground_truth.json missing"
    return CaseRef(rel, path, "chaosbench", "invalid" if problem else status, problem, opaque_id(rel))


def _external(root: Path, path: Path) -> CaseRef:
    rel = str(path.relative_to(root)) if path != root else path.name
    problem = _problem(RCAEvalCaseView(path))
    return CaseRef(rel, path, "rcaeval", "invalid" if problem else "completed", problem, opaque_id(rel))


def _discover_dirs(root: Path) -> list[CaseRef]:
    refs: dict[Path, CaseRef] = {}
    candidates = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
    skip = ("detectors", "labels", "eval")
    for d in candidates:
        if any(part.endswith(PARTIAL_SUFFIX) or part in skip for part in d.relative_to(root).parts[:-1]):
            continue
        if d.name.endswith(PARTIAL_SUFFIX):
            rel = str(d.relative_to(root)) if d != root else d.name
            refs[d] = CaseRef(rel, d, "chaosbench", "invalid", "incomplete case (.partial: the run did not finish)",
                              opaque_id(rel))
        elif is_case_dir(d):
            refs[d] = _native(root, d)
        elif (d / "inject_time.txt").is_file() and "_" in d.parent.name:
            refs[d] = _external(root, d)
    return sorted(refs.values(), key=lambda r: r.id)


def discover(root: Path, split: str = "all", labels: list[dict[str, Any]] | None = None) -> list[CaseRef]:
    """Every case under ``root`` in ``split`` (dev, test or all). ``labels``: the run's labels.jsonl records when
    they were read elsewhere (an archive). Raises InputInvalid when there is none."""
    root = Path(root)
    if split not in SPLITS:
        raise InputInvalid(f"--split must be one of {', '.join(SPLITS)} (got {split!r})")
    if not root.is_dir():
        raise InputInvalid(f"{root}: not a directory")
    if labels is not None or is_run_dir(root):
        refs = _discover_run(root, labels if labels is not None else read_labels(root))
    elif (root / "cases").is_dir() and not (root / LABELS_FILE).exists() and (root / "labels").is_dir():
        raise InputInvalid(f"{root}: a run without labels.jsonl (did the run finish?)")
    else:
        refs = _discover_dirs(root)
    if not refs:
        raise InputInvalid(f"{root}: no cases (no run with cases/ + labels.jsonl, no case directory with "
                           "manifest.json, and no RCAEval <service>_<fault>/<run>/ with data.csv + inject_time.txt)")
    if split != "all":
        refs = [r for r in refs if r.split == split]
        if not refs:
            raise InputInvalid(f"{root}: no case in split {split!r} (splits come from a run's labels.jsonl)")
    return refs
