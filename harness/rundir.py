"""The run directory: blind cases on one side, their labels on the other (results/README.md).

    <run>/run.json          what was run (kind, source file and its sha256, argv, seed, execution order)
    <run>/plan.json         one entry per case: index, case_id, split, faults, topology, workload
    <run>/cases/<id>/       blind cases (chaosbench.case.CaseWriter writes them)
    <run>/labels/<id>/      their answers, resolved scenarios, full journals and manifests
    <run>/labels.jsonl      one record per finished case (status, ground truth, split, draw)
    <run>/testbeds/         the testbeds' own state, logs and Ray sessions

Case ids are random (``secrets``), never derived from the seed: a published campaign seed reproduces the draw,
but cannot map an id to its answer. Cases run in a random order for the same reason (timestamps follow the
order), shuffled within runs of cases that share a testbed.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from chaosbench.case import PARTIAL_SUFFIX, GroundTruth, atomic_write_json, is_case_dir, labels_dir_of
from chaosbench.errors import InputInvalid


class LabelRecord(TypedDict, total=False):
    case_id: str
    index: int
    split: str | None
    status: str
    reason: str | None
    scenario: str
    ground_truth: GroundTruth
    faults: list[dict[str, Any]]
    intensity: float | None
    target_kind: str | None
    topology: str | None


@dataclass(frozen=True)
class CaseJob:
    """One case to run: its place in the plan, its opaque id and the scenario that makes it."""

    index: int
    case_id: str
    scenario: Any  # chaosbench.scenario.Scenario
    group: str  # cases of one group can share a testbed (same deployment)
    draw: dict[str, Any] = field(default_factory=dict)  # the plan entry (split, faults, intensity, ...)


def new_case_id() -> str:
    return secrets.token_hex(6)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def execution_order(jobs: Sequence[CaseJob]) -> list[CaseJob]:
    """Groups in order of first appearance, cases shuffled inside each group (a fresh, unrecorded seed)."""
    rng = random.Random(secrets.randbits(64))
    groups: dict[str, list[CaseJob]] = {}
    for job in jobs:
        groups.setdefault(job.group, []).append(job)
    out: list[CaseJob] = []
    for members in groups.values():
        rng.shuffle(members)
        out.extend(members)
    return out


def parse_labels(text: str, source: str, *, torn_tail_ok: bool = False) -> list[LabelRecord]:
    """labels.jsonl: one JSON object per line with a unique ``case_id``; a bad line is an InputInvalid naming
    ``source`` and the line. ``torn_tail_ok``: a last line without its newline that is not JSON was cut short
    by its writer and is skipped."""
    records: list[LabelRecord] = []
    seen: set[str] = set()
    lines = text.splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if torn_tail_ok and n == len(lines) and not text.endswith("\n"):
                break
            raise InputInvalid(f"{source}: line {n}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise InputInvalid(f"{source}: line {n}: not a JSON object")
        cid = rec.get("case_id")
        if not isinstance(cid, str) or not cid or "/" in cid or cid.startswith("."):
            raise InputInvalid(f"{source}: line {n}: no valid case_id")
        if cid in seen:
            raise InputInvalid(f"{source}: line {n}: case_id {cid} listed twice")
        seen.add(cid)
        records.append(rec)
    return records


def read_labels_file(path: Path, *, torn_tail_ok: bool = False) -> list[LabelRecord]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise InputInvalid(f"{path}: file not found") from None
    except OSError as exc:
        raise InputInvalid(f"{path}: unreadable ({exc})") from None
    return parse_labels(text, str(path), torn_tail_ok=torn_tail_ok)


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.cases = self.root / "cases"
        self.labels = self.root / "labels"
        self.testbeds = self.root / "testbeds"
        self.labels_file = self.root / "labels.jsonl"

    def case_dir(self, case_id: str) -> Path:
        return self.cases / case_id

    # ---------------------------------------------------------------- start / resume
    def start(self, kind: str, source: Path, jobs: Sequence[CaseJob], extra: dict[str, Any] | None = None) -> None:
        """Write run.json and plan.json before the first case (a crash leaves a resumable run)."""
        from chaosbench.collect.manifest import git_sha

        self.cases.mkdir(parents=True, exist_ok=True)
        self.labels.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / "plan.json", [{**j.draw, "index": j.index, "case_id": j.case_id}
                                                    for j in sorted(jobs, key=lambda j: j.index)])
        atomic_write_json(self.root / "run.json", {
            "kind": kind, "source": str(source), "source_sha256": file_sha256(source), "argv": sys.argv,
            "started": time.time(), "chaosbench_git_sha": git_sha(), **(extra or {}),
            "order": [j.case_id for j in jobs]})

    def run_info(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "run.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputInvalid(f"{self.root}: not a run directory to resume (run.json unreadable: {exc})") from exc

    def plan_ids(self) -> dict[int, str]:
        try:
            return {int(e["index"]): str(e["case_id"]) for e in json.loads((self.root / "plan.json").read_text())}
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InputInvalid(f"{self.root}: plan.json unreadable ({exc})") from exc

    def check_source(self, source: Path) -> None:
        info = self.run_info()
        if info.get("source_sha256") != file_sha256(source):
            raise InputInvalid(f"--resume {self.root}: {source} is not the file this run was started from "
                               f"({info.get('source')}, changed since?)")

    def finished(self) -> set[str]:
        """Ids whose case directory is final and whose label is written; partial ones are cleared for a redo."""
        done = {r["case_id"] for r in self.read_labels() if is_case_dir(self.case_dir(r["case_id"]))}
        for d in list(self.cases.glob(f"*{PARTIAL_SUFFIX}")) + [d for d in self.cases.iterdir() if d.name not in done]:
            shutil.rmtree(d, ignore_errors=True)
        for d in self.labels.iterdir() if self.labels.is_dir() else []:
            if d.name not in done:
                shutil.rmtree(d, ignore_errors=True)
        kept = [r for r in self.read_labels() if r["case_id"] in done]
        self._rewrite_labels(kept)
        return done

    # ---------------------------------------------------------------- labels
    def read_labels(self) -> list[LabelRecord]:
        """The labels written so far; a torn last line (a crash, or a run still appending) is skipped."""
        if not self.labels_file.is_file():
            return []
        return read_labels_file(self.labels_file, torn_tail_ok=True)

    def _rewrite_labels(self, records: list[LabelRecord]) -> None:
        from chaosbench.case import atomic_write_text

        atomic_write_text(self.labels_file, "".join(json.dumps(r) + "\n" for r in records))

    def add_label(self, job: CaseJob) -> LabelRecord:
        """Append the finished case's label (from its labels directory) to labels.jsonl."""
        ldir = labels_dir_of(self.case_dir(job.case_id))
        manifest = _json(ldir / "manifest.full.json") or {}
        record: LabelRecord = {
            "case_id": job.case_id, "index": job.index, "split": job.draw.get("split"),
            "status": manifest.get("status", "failed"), "reason": manifest.get("reason"),
            "scenario": job.scenario.metadata.name, "ground_truth": _json(ldir / "ground_truth.json") or {},
            "faults": job.draw.get("faults", []), "intensity": job.draw.get("intensity"),
            "target_kind": job.draw.get("target_kind"), "topology": job.draw.get("topology")}
        with open(self.labels_file, "a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
        return record


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
