"""Recovery journal: every injected fault is written down before it is made, so a crash cannot leave it in.

Where: each injection appends to two JSONL files, flushed and fsync'd per line:

- ``<case>.partial/fault-journal.jsonl`` (the case being written), and
- ``<recovery dir>/<key>.jsonl``, the global one that ``chaosbench cleanup`` and the next ``chaosbench`` start
  read. The recovery dir is ``$CHAOSBENCH_RECOVERY_DIR`` if set, else ``/run/chaosbench/recovery`` as root
  (tmpfs: what a fault changes - processes, qdiscs, rules, cgroup knobs - does not survive a reboot either),
  else ``~/.cache/chaosbench/recovery``.

Records: ``begin`` (handle from prepare, owner pid + start time), ``handle`` (after inject: pids etc.),
``done`` or ``failed``. An entry with no ``done`` whose owner process is gone is replayed by
``replay_fault_journals``: the fault module's ``recover(handle)`` runs, then ``done`` is appended. After a
clean recovery the global file is deleted, and so is the case-local one (the case keeps the story in
events.jsonl and ground_truth.json; a journal in the case would hand the answer to a detector).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypedDict

from chaosbench.faults.mech import procs

RECOVERY_DIR_ENV = "CHAOSBENCH_RECOVERY_DIR"
CASE_JOURNAL = "fault-journal.jsonl"
log = logging.getLogger(__name__)


class JournalRecord(TypedDict, total=False):
    op: Literal["begin", "handle", "done", "failed"]
    key: str
    t: float
    owner_pid: int
    owner_start: int | None
    handle: dict[str, Any]
    error: str


def recovery_dir() -> Path:
    if os.environ.get(RECOVERY_DIR_ENV):
        return Path(os.environ[RECOVERY_DIR_ENV])
    if os.geteuid() == 0:
        return Path("/run/chaosbench/recovery")
    return Path.home() / ".cache" / "chaosbench" / "recovery"


def _append(path: Path, record: JournalRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


class Journal:
    """The journal entry of one injection, mirrored in the case dir and the global recovery dir."""

    def __init__(self, key: str, case_dir: Path | None):
        self.key = key
        self.paths = [recovery_dir() / f"{key}.jsonl"] + ([Path(case_dir) / CASE_JOURNAL] if case_dir else [])

    def _write(self, op: str, **fields: Any) -> None:
        record: JournalRecord = {"op": op, "key": self.key, "t": time.time(), **fields}  # type: ignore[typeddict-item]
        for path in self.paths:
            _append(path, record)

    def begin(self, handle: dict[str, Any]) -> None:
        pid = os.getpid()
        self._write("begin", owner_pid=pid, owner_start=procs.start_time(pid), handle=handle)

    def update(self, handle: dict[str, Any]) -> None:
        self._write("handle", handle=handle)

    def failed(self, error: str) -> None:
        self._write("failed", error=error)

    def done(self) -> None:
        self._write("done")
        for path in self.paths:
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- replay


def read_entries(path: Path) -> dict[str, list[JournalRecord]]:
    """Records per key, in order; a torn last line (crash while writing) is skipped."""
    out: dict[str, list[JournalRecord]] = {}
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "key" in rec:
            out.setdefault(rec["key"], []).append(rec)  # type: ignore[arg-type]
    return out


def pending(records: list[JournalRecord], *, include_live: bool = False) -> dict[str, Any] | None:
    """The latest handle of an entry that still needs recovery, or None (done, or its owner still runs)."""
    if any(r.get("op") == "done" for r in records):
        return None
    begin = next((r for r in records if r.get("op") == "begin"), None)
    if begin is None:
        return None
    owner = begin.get("owner_pid")
    if not include_live and owner and procs.same_process(owner, begin.get("owner_start")):
        return None  # a live harness owns it and will recover it itself
    handles = [r["handle"] for r in records if "handle" in r]
    return handles[-1] if handles else None


def journal_files(root: Path | None) -> list[Path]:
    files = sorted(recovery_dir().glob("*.jsonl")) if recovery_dir().is_dir() else []
    if root is not None and Path(root).is_dir():
        files += sorted(Path(root).rglob(CASE_JOURNAL))
    return files


def _recover(handle: dict[str, Any]) -> None:
    """Through the backend's own replay if it has one (a handle without ``backend`` is the local backend's)."""
    from chaosbench.backends import backend
    from chaosbench.registry import import_ref

    replay_ref = backend(handle.get("backend", "local")).recover
    if replay_ref:
        import_ref(replay_ref)(handle)
        return
    from chaosbench.faults.base import injector
    from chaosbench.faults.targets import fan_out

    fan_out(injector(handle["fault_id"])).recover(handle)


def replay(files: Iterable[Path], *, include_live: bool = False) -> int:
    """Recover every pending entry in ``files``; returns how many faults were rolled back."""
    recovered: set[str] = set()
    for path in files:
        for key, records in read_entries(path).items():
            handle = pending(records, include_live=include_live)
            if handle is None:
                continue
            if key not in recovered:
                try:
                    _recover(handle)
                except Exception as exc:  # noqa: BLE001 - keep going; the entry stays for the next replay
                    log.error("recovery of %s (%s) failed: %s", key, handle.get("fault_id"), exc)
                    _append(path, {"op": "failed", "key": key, "t": time.time(), "error": str(exc)})
                    continue
                recovered.add(key)
            _append(path, {"op": "done", "key": key, "t": time.time()})
        if path.parent == recovery_dir() and all(
            pending(r, include_live=True) is None for r in read_entries(path).values()
        ):
            path.unlink(missing_ok=True)
    return len(recovered)


def replay_fault_journals(root: str | Path | None = None, *, include_live: bool = False) -> int:
    """Roll back every fault left in by a crashed harness: the global recovery dir, plus any
    ``fault-journal.jsonl`` under ``root`` (e.g. ``results/``). Entries owned by a live harness process are
    left to it unless ``include_live``. Returns the number of faults recovered."""
    return replay(journal_files(Path(root) if root is not None else None), include_live=include_live)
