"""chaosbench.stages: one start and one end line per stage, whichever way the stage ends."""

from __future__ import annotations

import json

import pytest

from chaosbench.case import CaseWriter
from chaosbench.stages import Recorder, stage


def _lines(writer: CaseWriter) -> list[dict]:
    return [json.loads(line) for line in (writer.labels_path / "events.jsonl").read_text().splitlines()]


def test_ok_failed_raised_and_interrupted_stages(tmp_path):
    writer = CaseWriter(tmp_path / "run" / "cases" / "c1")
    with stage(writer, "fault.inject", {"key": "k"}):
        pass
    with stage(writer, "fault.recover") as st:
        st.fail("qdisc still there")
    with stage(writer, "fault.verify") as st:
        st.end.update(duration_s=1.5, detail={"signal": "x"})
    with pytest.raises(ValueError), stage(writer, "collect"):
        raise ValueError("no data")
    with pytest.raises(KeyboardInterrupt), stage(writer, "load.start"):
        raise KeyboardInterrupt
    lines = _lines(writer)
    assert [(r["stage"], r["event"], r["status"]) for r in lines] == [
        ("fault.inject", "start", "ok"), ("fault.inject", "end", "ok"),
        ("fault.recover", "start", "ok"), ("fault.recover", "end", "failed"),
        ("fault.verify", "start", "ok"), ("fault.verify", "end", "ok"),
        ("collect", "start", "ok"), ("collect", "end", "failed"),
        ("load.start", "start", "ok"), ("load.start", "end", "failed")]
    assert lines[0]["detail"] == {"key": "k"} and lines[3]["error"] == "qdisc still there"
    assert lines[5]["duration_s"] == 1.5 and lines[5]["detail"] == {"signal": "x"}
    assert lines[7]["error"] == "ValueError: no data" and "raise ValueError" in lines[7]["traceback"]
    assert lines[9]["error"] == "interrupted"


def test_the_recorder_times_only_finished_stages_and_reports_progress(tmp_path):
    phases: list[str] = []
    rec = Recorder(CaseWriter(tmp_path / "run" / "cases" / "c2"), lambda name, frac: phases.append(name))
    with rec.stage("deploy", backend="local"):
        pass
    with pytest.raises(RuntimeError), rec.stage("load.start"):
        raise RuntimeError("locust")
    assert phases == ["deploy", "load.start"] and set(rec.timings) == {"deploy"}
    assert _lines(rec.writer)[0]["detail"] == {"backend": "local"}
