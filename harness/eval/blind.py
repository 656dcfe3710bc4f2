"""Blind copies: what detectors run against.

Before detection, each case's blind files (chaosbench.case.BLIND_FILES and BLIND_DIRS, nothing else) are copied into
a fresh ``tempfile.mkdtemp(prefix="chaosbench-blind-")`` directory, at ``<tmp>/run/cases/<case_id>/``; detectors
get CaseViews of those copies, and the copies are removed afterwards. The manifest is reduced to its blind keys
(older manifests name the scenario, argv and run id), topology.json to the Topology fields, events.jsonl to the
blind stages. So a plugin that opens files by path finds no answer near the case it is handed: the three
directories above a copy hold blind copies only (a shallower ``<tmp>/<id>`` would put ``/`` in reach, and a walk
of ``/`` finds the run's labels.jsonl). Ray workers on other machines need TMPDIR on a shared filesystem.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from chaosbench.case import BLIND_DIRS, BLIND_FILES, BLIND_STAGES, Topology, atomic_write_json, blind_manifest
from chaosbench.eval.discover import CaseRef

BLIND_PREFIX = "chaosbench-blind-"


def _copy_json(src: Path, dst: Path, reduce) -> None:
    try:
        doc = json.loads(src.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        shutil.copyfile(src, dst)  # the detector sees the same unreadable file it would have seen
        return
    atomic_write_json(dst, reduce(doc) if isinstance(doc, dict) else doc)


def _topology(doc: dict) -> dict:
    try:
        return Topology.from_json(doc).to_json()
    except (KeyError, TypeError, ValueError):
        return {k: doc[k] for k in Topology.__dataclass_fields__ if k in doc}


def _events(src: Path, dst: Path) -> None:
    lines = []
    for line in src.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("stage") in BLIND_STAGES:
            lines.append(json.dumps({k: rec[k] for k in ("t", "stage", "event", "status") if k in rec}) + "\n")
    dst.write_text("".join(lines))


def copy_blind(src: Path, dst: Path, case_id: str) -> Path:
    """Copy the blind files of the case at ``src`` to ``dst`` (created); return ``dst``."""
    dst.mkdir(parents=True)
    for name in BLIND_FILES:
        f = src / name
        if not f.is_file():
            continue
        if name == "manifest.json":
            _copy_json(f, dst / name, lambda d: blind_manifest(d, case_id))
        elif name == "topology.json":
            _copy_json(f, dst / name, _topology)
        elif name == "events.jsonl":
            _events(f, dst / name)
        else:
            shutil.copyfile(f, dst / name)
    for name in BLIND_DIRS:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name, copy_function=shutil.copyfile,
                            ignore=lambda d, names: [n for n in names if n.startswith(".")])
    return dst


@contextmanager
def blind_cases(refs: Sequence[CaseRef]) -> Iterator[dict[str, Path]]:
    """Blind copies of ``refs`` (case_id -> copy), removed on exit."""
    root = Path(tempfile.mkdtemp(prefix=BLIND_PREFIX))
    try:
        cases = root / "run" / "cases"
        yield {r.case_id: copy_blind(r.path, cases / r.case_id, r.case_id) for r in refs}
    finally:
        shutil.rmtree(root, ignore_errors=True)
