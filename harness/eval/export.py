"""Pack a run into one archive, and read one back for ``chaosbench eval FILE.tar.gz``.

The archive holds ``<run-name>/``: ``cases/<id>/`` (blind files only, as detectors see them: chaosbench.eval.blind),
``labels.jsonl``, ``labels/``, ``dataset_card.md``/``.json``, ``plan.json`` and ``run.json`` (those present).
Reading extracts only ``cases/`` (to a temporary directory, removed afterwards) and reads ``labels.jsonl`` in
memory, so no label is ever written where a detector could look.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from chaosbench.errors import InputInvalid
from chaosbench.eval.blind import copy_blind
from chaosbench.eval.discover import LABELS_FILE, is_run_dir, read_labels
from chaosbench.rundir import parse_labels

RUN_FILES = (LABELS_FILE, "dataset_card.md", "dataset_card.json", "plan.json", "run.json")


def export_run(run: Path, out: Path) -> tuple[Path, int]:
    """Write ``out`` (.tar.gz) from the run directory ``run``; returns (out, number of cases packed)."""
    run, out = Path(run), Path(out)
    if not is_run_dir(run):
        raise InputInvalid(f"{run}: not a run directory (cases/ + labels.jsonl)")
    if not out.name.endswith((".tar.gz", ".tgz")):
        raise InputInvalid(f"{out}: the archive name must end in .tar.gz")
    labels = read_labels(run)
    top = run.resolve().name
    stage = Path(tempfile.mkdtemp(prefix="chaosbench-export-"))
    n = 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            for rec in labels:
                src = run / "cases" / rec["case_id"]
                if src.is_dir():
                    blind = copy_blind(src, stage / rec["case_id"], rec["case_id"])
                    tar.add(blind, arcname=f"{top}/cases/{rec['case_id']}")
                    n += 1
            for name in RUN_FILES:
                if (run / name).is_file():
                    tar.add(run / name, arcname=f"{top}/{name}")
            if (run / "labels").is_dir():
                tar.add(run / "labels", arcname=f"{top}/labels")
        tmp.replace(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out, n


def _prefix(names: list[str], source: Path) -> str:
    """The archive's run directory: where labels.jsonl is ('' or 'name/')."""
    hits = [n for n in names if PurePosixPath(n).name == LABELS_FILE and len(PurePosixPath(n).parts) <= 2]
    if len(hits) != 1:
        raise InputInvalid(f"{source}: not an archive of one run (expected one labels.jsonl, found {len(hits)})")
    parent = str(PurePosixPath(hits[0]).parent)
    return "" if parent == "." else parent + "/"


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:gz")
    except (OSError, tarfile.TarError) as exc:
        raise InputInvalid(f"{path}: not a readable .tar.gz ({exc})") from exc


@contextmanager
def open_archive(path: Path) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """(run root with cases/ extracted, labels records) of an exported archive; the extraction is removed on exit."""
    path = Path(path)
    root = Path(tempfile.mkdtemp(prefix="chaosbench-export-"))
    try:
        with _open_tar(path) as tar:
            members = tar.getmembers()
            prefix = _prefix([m.name for m in members], path)
            fh = tar.extractfile(prefix + LABELS_FILE)
            if fh is None:
                raise InputInvalid(f"{path}: {prefix}{LABELS_FILE} is not a file")
            labels = parse_labels(fh.read().decode(errors="replace"), f"{path}:{prefix}{LABELS_FILE}")
            cases = [m for m in members if m.name.startswith(prefix + "cases/") and (m.isfile() or m.isdir())]
            for m in cases:
                m.name = "run/" + m.name[len(prefix):]
            try:
                tar.extractall(root, members=cases, filter="data")
            except (tarfile.TarError, OSError) as exc:
                raise InputInvalid(f"{path}: cannot extract the cases ({exc})") from exc
        (root / "run" / "cases").mkdir(parents=True, exist_ok=True)
        yield root / "run", labels
    finally:
        shutil.rmtree(root, ignore_errors=True)
