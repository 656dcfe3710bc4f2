"""Stage journalling: every stage of a case appends a start and an end line to the case's events.jsonl.

    with stage(writer, "fault.recover") as st:
        ...                      # an exception ends the stage "failed" (error + traceback) and propagates
        st.fail("still there")   # or end it "failed" without raising
        st.end["detail"] = {...} # fields for the end line

``Recorder`` is the runner's: the same stages, plus the progress display and the durations for the manifest.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaosbench.case import CaseWriter

Progress = Callable[[str, float | None], None]  # (phase, fraction of the load done or None)


@dataclass
class Stage:
    """The open stage: ``fail(error)`` ends it failed without raising; ``end`` holds extra end-line fields
    (a ``duration_s`` there replaces the measured one)."""

    started: float
    error: str | None = None
    end: dict[str, Any] = field(default_factory=dict)

    def fail(self, error: str) -> None:
        self.error = error


def describe(exc: BaseException) -> str:
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"


@contextmanager
def stage(writer: CaseWriter, name: str, detail: dict[str, Any] | None = None) -> Iterator[Stage]:
    """Journal stage ``name`` (``detail`` on its start line) around the block."""
    st = Stage(time.time())
    if detail:
        writer.event(name, "start", detail=detail)
    else:
        writer.event(name, "start")
    try:
        yield st
    except BaseException as exc:
        writer.event(name, "end", "failed", duration_s=round(time.time() - st.started, 3), error=describe(exc),
                     traceback=traceback.format_exc(limit=8))
        raise
    fields = {"duration_s": round(time.time() - st.started, 3), **st.end}
    if st.error is None:
        writer.event(name, "end", **fields)
    else:
        writer.event(name, "end", "failed", error=st.error, **fields)


@dataclass
class Recorder:
    """The runner's stages: journalled as ``stage`` does, shown on the progress display, timed for the manifest."""

    writer: CaseWriter
    progress: Progress | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str, **detail: Any) -> Iterator[Stage]:
        if self.progress:
            self.progress(name, None)
        with stage(self.writer, name, detail) as st:
            yield st
        self.timings[name] = time.time() - st.started
