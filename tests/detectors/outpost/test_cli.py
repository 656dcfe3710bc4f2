from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaosbench.cli import main
from chaosbench.detectors.outpost.synth import Slowdown, SynthSpec

from .conftest import FIXTURES


def test_outpost_json_on_a_case_dir(make_case, capsys) -> None:
    case, _ = make_case("c", SynthSpec(ranks=4, steps=24, seed=2, slowdowns=(Slowdown((1,), 2.0, 12, 23),)))
    assert main(["detect", "outpost", str(case), "--json"]) == 0  # a case dir: traces + inject time
    out = json.loads(capsys.readouterr().out)
    assert out["anomalous"] is True
    top = out["ranking"][0]
    assert set(top) == {"worker", "worker_name", "component", "thread", "score", "events", "cause"}
    assert (top["worker"], top["worker_name"], top["thread"]) == ("4001", "rank-1", "MainThread")
    ev = out["events"][0]
    assert {"worker", "thread", "name", "ts", "dur", "expected_dur", "score"} <= set(ev)
    assert out["runtime_s"] > 0


def test_outpost_text_on_a_trace_dir(shared_traces: Path, capsys) -> None:
    assert main(["detect", "outpost", str(shared_traces / "kineto-recsys-2rank"), "--lambda", "5"]) == 0
    assert capsys.readouterr().out.startswith("no anomaly:")


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "malformed").iterdir()))
def test_malformed_input_one_line_exit_2(name: str, capsys) -> None:
    assert main(["detect", "outpost", str(FIXTURES / "malformed" / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_options_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["detect", "outpost", str(tmp_path / "missing")]) == 2
    assert main(["detect", "outpost", str(FIXTURES / "begin-end"), "--worker-key", "bogus"]) == 2
    assert main(["detect", "sweep", str(tmp_path), "--lambdas", "3,x"]) == 2
    assert main(["detect", "sweep", str(tmp_path)]) == 2  # no cases


def test_sweep_prints_the_curve(make_case, tmp_path: Path, capsys) -> None:
    make_case("slow", SynthSpec(ranks=4, steps=24, seed=3, slowdowns=(Slowdown((2,), 2.0, 12, 23),)))
    make_case("clean", SynthSpec(ranks=4, steps=24, seed=4))
    root = tmp_path  # make_case writes its cases here
    assert main(["detect", "sweep", str(root), "--lambdas", "3,5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["lambda"] for r in out["lambdas"]] == [3.0, 5.0]
    at5 = out["lambdas"][1]
    assert at5["cases"] == 2
    assert at5["case"]["tp"] == 1 and at5["case"]["fp"] == 0
    assert at5["event"]["precision"] > 0.9 and at5["event"]["recall"] > 0.9
    assert set(at5["per_fault"]) == {"clean", "synthetic-slowdown"}
    assert main(["detect", "sweep", str(root), "--lambdas", "4"]) == 0
    assert "synthetic-slowdown" in capsys.readouterr().out
