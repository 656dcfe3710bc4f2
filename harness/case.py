"""The case directory: one injected fault (or one clean run), RCAEval-compatible, blind.

Layout (ARCHITECTURE.md "Case directory"; results/README.md for the whole run)::

    <run>/cases/<id>/          what a detector may read (the id is opaque)
      manifest.json            versions, backend, engine (no scenario, argv, run id, status or timings)
      topology.json            what detectors may know of the deployment (no fault)
      events.jsonl             the timeline's non-fault stages only (t, stage, event, status)
      inject_time.txt          unix seconds of the verified injection (clean runs: the nominal time)
      data.csv                 `time` + `<component>_<metric>` columns
      logs.csv                 time, component, level, message
      traces/                  one Chrome-trace JSON(.gz) per worker rank
      load/                    requests.jsonl, Locust CSVs, summary.json
    <run>/labels/<id>/         never reachable through CaseView
      ground_truth.json        the answer
      scenario.resolved.yaml   scenario after defaults, seed included
      events.jsonl             the full timeline, fault stages included, appended and flushed per line
      manifest.full.json       provenance + case status (written last)
      fault-journal.jsonl      the injections' recovery journal

A lone case directory (not under ``cases/``: tests, older runs) keeps everything inside itself.
A case is written under ``<case>.partial/`` and renamed to ``<case>/`` by
``CaseWriter.finalize``: a crash leaves a ``.partial`` directory that no reader
accepts as a case. Single files are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

from chaosbench.errors import CaseInvalid

PARTIAL_SUFFIX = ".partial"
CaseStatus = Literal["completed", "not-verified", "failed", "aborted"]

# Files a detector must never be handed, directly or through CaseView.
GROUND_TRUTH_FILES = frozenset({"ground_truth.json", "scenario.resolved.yaml", "fault-journal.jsonl"})


class GroundTruth(TypedDict):
    fault_id: str | None  # None for a clean run
    fault_class: str | None
    component: str | None  # as it appears in telemetry: node-1, rank-2, replica-1, replica-1.stage-0, ingress
    node: str | None  # the target's node; for a replica or a stage the one node of all its ranks, else None
    rank: int | None  # a rank target's index; None for the other kinds
    ranks: NotRequired[list[int]]  # replica and stage targets only: the global ranks they hold
    start: float | None  # verified injection, unix seconds
    end: float | None  # verified recovery, unix seconds
    mechanism: str | None
    realism: Literal["real", "emulated"] | None
    verified: bool


class EventRecord(TypedDict, total=False):
    t: float
    stage: str
    event: str  # start | end | point
    status: Literal["ok", "failed", "skipped"]
    duration_s: float
    detail: dict[str, Any]
    error: str
    traceback: str


# --------------------------------------------------------------------------- writing


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


BLIND_STAGES = ("deploy", "load.start", "baseline.gate", "traces.start", "traces.stop", "recovery.probes",
                "load.end", "collect")  # the timeline a detector may see: the same stages in clean and faulty cases
BLIND_MANIFEST_KEYS = ("chaosbench", "versions", "backend", "engine")


def labels_dir_of(case_dir: Path) -> Path:
    """Where a case's labels live: ``<run>/labels/<id>/`` beside ``<run>/cases/<id>/``; a lone case directory
    (not under ``cases/``) keeps them inside itself (tests, legacy cases)."""
    case_dir = Path(case_dir)
    name = case_dir.name.removesuffix(PARTIAL_SUFFIX)
    if case_dir.parent.name == "cases":
        return case_dir.parent.parent / "labels" / name
    return case_dir.with_name(name)


def blind_manifest(manifest: dict[str, Any], case_id: str) -> dict[str, Any]:
    """What a detector may read of the provenance: versions and engine, no scenario, argv, run id or status."""
    out: dict[str, Any] = {"case_id": case_id, "schema": "chaosbench/case-v2"}
    out.update({k: manifest[k] for k in BLIND_MANIFEST_KEYS if k in manifest})
    machine = manifest.get("machine") or {}
    out["machine"] = {k: machine[k] for k in ("cpus", "memory_bytes") if k in machine}
    return out


class CaseWriter:
    """Builds one case under ``<final>.partial`` and commits it with ``finalize``.

    Under a run (``<run>/cases/<id>``) the case directory gets only what detectors may read; the answer, the
    resolved scenario, the full journal and the full manifest go to ``<run>/labels/<id>/`` (``labels_path``)."""

    def __init__(self, final_dir: Path):
        self.final_dir = Path(final_dir)
        if self.final_dir.exists():
            raise CaseInvalid(f"{self.final_dir}: case directory already exists")
        self.path = self.final_dir.with_name(self.final_dir.name + PARTIAL_SUFFIX)
        self.path.mkdir(parents=True, exist_ok=True)
        self.blind = self.final_dir.parent.name == "cases"
        self.labels_path = labels_dir_of(self.final_dir) if self.blind else self.path
        self.labels_path.mkdir(parents=True, exist_ok=True)
        for sub in ("traces", "load"):
            (self.path / sub).mkdir(exist_ok=True)
        self._events = open(self.labels_path / "events.jsonl", "a", buffering=1)

    # files -----------------------------------------------------------------
    def write_text(self, rel: str, text: str) -> Path:
        target = self.path / rel
        atomic_write_text(target, text)
        return target

    def write_json(self, rel: str, obj: object) -> Path:
        target = self.path / rel
        atomic_write_json(target, obj)
        return target

    def write_label_text(self, rel: str, text: str) -> Path:
        target = self.labels_path / rel
        atomic_write_text(target, text)
        return target

    def write_ground_truth(self, truth: GroundTruth) -> None:
        atomic_write_json(self.labels_path / "ground_truth.json", truth)

    def write_inject_time(self, t: float) -> None:
        self.write_text("inject_time.txt", f"{t:.3f}\n")

    # journal ---------------------------------------------------------------
    def event(self, stage: str, event: str, status: str = "ok", **fields: Any) -> None:
        record = {"t": round(time.time(), 6), "stage": stage, "event": event, "status": status, **fields}
        self._events.write(json.dumps(record, default=str) + "\n")
        self._events.flush()

    def _blind_events(self) -> str:
        lines = []
        for line in (self.labels_path / "events.jsonl").read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("stage") in BLIND_STAGES:
                lines.append(json.dumps({k: rec[k] for k in ("t", "stage", "event", "status") if k in rec}))
        return "".join(line + "\n" for line in lines)

    # commit ----------------------------------------------------------------
    def finalize(self, manifest: dict[str, Any], status: CaseStatus) -> Path:
        """Write manifest.json last, then rename the directory into place."""
        self._events.close()
        if self.blind:
            atomic_write_json(self.labels_path / "manifest.full.json", {**manifest, "status": status})
            self.write_text("events.jsonl", self._blind_events())
            self.write_json("manifest.json", blind_manifest(manifest, self.final_dir.name))
        else:
            self.write_json("manifest.json", {**manifest, "status": status})
        os.replace(self.path, self.final_dir)
        return self.final_dir


# --------------------------------------------------------------------------- reading


class RankPlace(TypedDict):
    replica: int  # data-parallel replica d
    stage: int  # pipeline stage p within the replica
    tp_index: int  # t: position in the stage's tensor-parallel group
    node: str


class Layout(TypedDict):
    """DP x PP x TP: global rank r = (d * pipeline_parallel + p) * tensor_parallel + t (chaosbench.scenario)."""

    data_parallel: int
    pipeline_parallel: int
    tensor_parallel: int
    ranks: dict[str, RankPlace]  # rank-<r> -> its place


@dataclass(frozen=True)
class Topology:
    """What a detector may know about the deployment: never the fault."""

    backend: str
    engine: str
    nodes: tuple[str, ...]
    ranks: tuple[str, ...]
    rank_node: dict[str, str] = field(default_factory=dict)  # rank-2 -> node-1
    components: tuple[str, ...] = ()  # every component that may appear in data.csv (replicas, stages included)
    emulated_device: bool = False  # the engine's device layer emulates GPU effects
    layout: Layout | None = None  # replicas, stages and tp indexes of the ranks (None: written before layouts)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Topology:
        return cls(
            backend=obj["backend"],
            engine=obj["engine"],
            nodes=tuple(obj["nodes"]),
            ranks=tuple(obj["ranks"]),
            rank_node=dict(obj.get("rank_node", {})),
            components=tuple(obj.get("components", ())),
            emulated_device=bool(obj.get("emulated_device", False)),
            layout=obj.get("layout"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "engine": self.engine,
            "nodes": list(self.nodes),
            "ranks": list(self.ranks),
            "rank_node": dict(self.rank_node),
            "components": list(self.components),
            "emulated_device": self.emulated_device,
            **({"layout": self.layout} if self.layout is not None else {}),
        }


def is_case_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.endswith(PARTIAL_SUFFIX) and (path / "manifest.json").is_file()


def find_cases(root: Path) -> Iterator[Path]:
    """Every completed case directory at or below ``root`` (sorted)."""
    root = Path(root)
    if is_case_dir(root):
        yield root
        return
    for manifest in sorted(root.rglob("manifest.json")):
        if is_case_dir(manifest.parent):
            yield manifest.parent


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CaseInvalid(f"{path}: missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CaseInvalid(f"{path}: not valid JSON ({exc})") from exc


def read_ground_truth(case_dir: Path) -> GroundTruth:
    """For scorers only. Detectors get a CaseView, which has no way to this."""
    return _read_json(labels_dir_of(case_dir) / "ground_truth.json")


def read_case_status(case_dir: Path) -> str:
    """The case's status (completed, not-verified, failed, aborted) from its full manifest (labels side)."""
    full = labels_dir_of(case_dir) / "manifest.full.json"
    return str(_read_json(full if full.is_file() else Path(case_dir) / "manifest.json").get("status", "completed"))


# What a detector may read of a case (chaosbench.eval.blind copies exactly these); traces.csv and logts.csv are
# RCAEval's data files. Everything else (ground truth, resolved scenario, full journal, labels) stays behind.
BLIND_FILES = ("manifest.json", "topology.json", "inject_time.txt", "events.jsonl", "data.csv", "logs.csv",
               "traces.csv", "logts.csv")
BLIND_DIRS = ("traces", "load")


class CaseView:
    """Read-only, lazy access to a case's blind files (BLIND_FILES, BLIND_DIRS): never the answer or the scenario.
    Evaluations hand detectors a CaseView of a blind copy (chaosbench.eval.blind)."""

    def __init__(self, path: Path):
        path = Path(path)
        if path.name.endswith(PARTIAL_SUFFIX):
            raise CaseInvalid(f"{path}: incomplete case (the run did not finish)")
        if not (path / "manifest.json").is_file():
            raise CaseInvalid(f"{path}: not a case directory (no manifest.json)")
        self._path = path

    @property
    def path(self) -> Path:
        return self._path

    @property
    def case_id(self) -> str:
        """The case's opaque id (its directory name in the blind copy)."""
        return self._path.name

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The blind manifest: versions, backend, engine, machine summary; never the scenario, argv or run id."""
        return blind_manifest(_read_json(self._path / "manifest.json"), self.case_id)

    @cached_property
    def topology(self) -> Topology:
        return Topology.from_json(_read_json(self._path / "topology.json"))

    @cached_property
    def inject_time(self) -> float:
        """Unix seconds of the injection; clean runs carry the nominal time of the same window."""
        f = self._path / "inject_time.txt"
        try:
            return float(f.read_text().strip())
        except FileNotFoundError as exc:
            raise CaseInvalid(f"{f}: missing") from exc
        except ValueError as exc:
            raise CaseInvalid(f"{f}: not a number") from exc

    def metrics(self):
        """data.csv as a DataFrame: ``time`` (unix s) + ``<component>_<metric>`` columns."""
        import pandas as pd

        f = self._path / "data.csv"
        if not f.is_file():
            raise CaseInvalid(f"{f}: missing")
        try:
            df = pd.read_csv(f)
        except Exception as exc:  # noqa: BLE001 - pandas raises many types for bad CSV
            raise CaseInvalid(f"{f}: unreadable CSV ({exc})") from exc
        if "time" not in df.columns:
            raise CaseInvalid(f"{f}: no 'time' column")
        return df

    def logs(self):
        """logs.csv as a DataFrame (time, component, level, message); empty if absent."""
        import pandas as pd

        f = self._path / "logs.csv"
        if not f.is_file():
            return pd.DataFrame(columns=["time", "component", "level", "message"])
        return pd.read_csv(f)

    def requests(self):
        """load/requests.jsonl as a DataFrame (one row per request); empty if absent."""
        import pandas as pd

        f = self._path / "load" / "requests.jsonl"
        if not f.is_file():
            return pd.DataFrame()
        return pd.read_json(f, lines=True)

    def load_summary(self) -> dict[str, Any]:
        f = self._path / "load" / "summary.json"
        return _read_json(f) if f.is_file() else {}

    @property
    def traces_dir(self) -> Path:
        return self._path / "traces"

    def trace_files(self) -> list[Path]:
        d = self.traces_dir
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.name.endswith((".json", ".json.gz")))

    def events(self) -> list[EventRecord]:
        """The run's timeline, blind stages only (BLIND_STAGES: the same in clean and faulty cases), t/stage/event/
        status fields only; older cases kept the whole journal here, which this filters the same way."""
        f = self._path / "events.jsonl"
        out: list[EventRecord] = []
        if not f.is_file():
            return out
        for line in f.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a crash can leave a torn last line
            if isinstance(rec, dict) and rec.get("stage") in BLIND_STAGES:
                out.append({k: rec[k] for k in ("t", "stage", "event", "status") if k in rec})  # type: ignore[misc]
        return out
