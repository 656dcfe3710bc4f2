"""``chaosbench explain CASE_DIR [--backend rules|openai] [--json]``: output and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaosbench.cli import main


def test_explain_prints_the_block(make_case, capsys: pytest.CaptureFixture[str]):
    case = make_case("cpu-throttle")
    assert main(["explain", str(case)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<analysis>") and "fault_class: cpu-throttle" in out and "root_cause: node-1" in out


def test_explain_json(make_case, capsys: pytest.CaptureFixture[str]):
    case = make_case("gpu-memory-pressure")
    assert main(["explain", str(case), "--backend", "rules", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["method"] == "kat-analyzer" and obj["status"] == "ok"
    assert obj["extra"]["fault_class"] == "gpu-memory-pressure" and obj["ranking"][0]["component"] == "rank-0"
    assert obj["extra"]["chain"][-1]["kind"] == "cause"


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["/nonexistent/case"], {}, 2, "not a case directory"),
        (["{case}", "--backend", "llm"], {}, 2, "unknown analyzer backend 'llm'"),
        (["{case}", "--backend", "openai"], {}, 2, "needs CHAOSBENCH_LLM_BASE_URL"),
        (["{case}", "--backend", "openai"], {"CHAOSBENCH_LLM_BASE_URL": "http://127.0.0.1:9/v1",
                                             "CHAOSBENCH_LLM_MODEL": "m"}, 3, "cannot reach the LLM endpoint"),
    ],
)
def test_bad_input_is_one_line(make_case, capsys, monkeypatch, args, env, code, message):
    monkeypatch.delenv("CHAOSBENCH_LLM_BASE_URL", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    case: Path = make_case("gpu-clock-lock")
    assert main(["explain", *[a.format(case=case) for a in args]]) == code
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert "Traceback" not in captured.err + captured.out
