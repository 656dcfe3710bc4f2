"""benchmarks/eval_analyzer.py runs on case directories and prints per-fault numbers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from .conftest import write_case

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "eval_analyzer.py"


def _load():
    spec = importlib.util.spec_from_file_location("eval_analyzer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_prints_per_fault_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bench = _load()
    for fault in ("gpu-xid-error", "host-memory-pressure", None):
        write_case(tmp_path / "cases" / (fault or "clean"), fault)
    assert bench.main([str(tmp_path / "cases")]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["gpu-xid-error"][1:8] == ["1", "1.000", "1.000", "1.000", "1.000", "1.000", "1.000"]
    assert rows["none"][-1] == "-" and rows["all"][1] == "3"
    assert "3 cases, analyzer runtime" in out
    assert bench.main([str(tmp_path / "cases"), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["table"]["all"]["fault_class_accuracy"] == 1.0 and len(obj["cases"]) == 3


def test_bad_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bench = _load()
    assert bench.main([str(tmp_path / "nope")]) == 2
    (tmp_path / "empty").mkdir()
    assert bench.main([str(tmp_path / "empty")]) == 2
    assert "no completed case directories" in capsys.readouterr().err
