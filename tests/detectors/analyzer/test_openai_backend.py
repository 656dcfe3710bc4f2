"""The openai backend against a local stub of the chat-completions protocol: valid answer, retry on a
malformed one, giving up (valid-format rate recorded), and clear one-line errors for a bad endpoint."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chaosbench.case import CaseView
from chaosbench.detectors.analyzer import explain
from chaosbench.detectors.analyzer.openai_backend import LLMConfig, LLMUnavailable
from chaosbench.detectors.analyzer.output import FORMAT_ID
from chaosbench.errors import InputInvalid

VALID = f"""I looked at the SM clock first.
<analysis>
format: {FORMAT_ID}
chain:
1. symptom | ingress | TTFT and ITL rose threefold
2. effect | rank-0, rank-2, rank-3 | peers wait in all-reduce for rank-1
3. cause | rank-1 | SM clock of rank-1 locked at 500 MHz
root_cause: rank-1
fault_class: gpu-clock-lock
category: GPU
confidence: 0.9
</analysis>"""
MALFORMED = "The root cause is probably rank-1 (clock lock). <analysis>fault: clock</analysis>"
INVENTED = VALID.replace("3. cause | rank-1", "3. cause | rank-1, gpu-7")


@dataclass
class Stub:
    url: str
    script: list = field(default_factory=list)  # str answer | ("status", code, body) | ("sleep", s) | ("raw", text)
    requests: list = field(default_factory=list)
    models: list = field(default_factory=lambda: ["stub-model"])


def _handler(stub: Stub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def _send(self, code: int, body: str, ctype: str = "application/json") -> None:
            data = body.encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                pass

        def do_GET(self):
            stub.requests.append({"path": self.path, "headers": dict(self.headers)})
            self._send(200, json.dumps({"object": "list", "data": [{"id": m} for m in stub.models]}))

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            step = stub.script.pop(0) if stub.script else MALFORMED
            if isinstance(step, tuple) and step[0] == "status":
                return self._send(step[1], step[2], "text/plain")
            if isinstance(step, tuple) and step[0] == "sleep":
                time.sleep(step[1])
                step = VALID
            if isinstance(step, tuple) and step[0] == "raw":
                return self._send(200, step[1])
            answer = {"id": "x", "object": "chat.completion", "model": body["model"],
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": step},
                                   "finish_reason": "stop"}]}
            self._send(200, json.dumps(answer))

    return Handler


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stub]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)  # type: ignore[arg-type]
    server.daemon_threads = True
    s = Stub(url=f"http://127.0.0.1:{server.server_port}/v1")
    server.RequestHandlerClass = _handler(s)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("CHAOSBENCH_LLM_BASE_URL", s.url)
    monkeypatch.setenv("CHAOSBENCH_LLM_MODEL", "tiny-llama")
    monkeypatch.setenv("CHAOSBENCH_LLM_API_KEY", "sk-test")
    monkeypatch.delenv("CHAOSBENCH_LLM_TIMEOUT", raising=False)
    monkeypatch.delenv("CHAOSBENCH_LLM_MAX_ATTEMPTS", raising=False)
    yield s
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> CaseView:
    from .conftest import write_case

    return CaseView(write_case(tmp_path_factory.mktemp("llm") / "c", "gpu-clock-lock"))


def _posts(stub: Stub) -> list[dict]:
    return [r for r in stub.requests if r["path"].endswith("/chat/completions")]


def test_valid_answer(stub: Stub, case: CaseView):
    stub.script = [VALID]
    result = explain(case, "openai")
    assert result.status == "ok" and result.extra["backend"] == "openai"
    assert result.extra["fault_class"] == "gpu-clock-lock" and result.ranking[0].component == "rank-1"
    assert result.extra["format_attempts"] == 1 and result.extra["format_valid_rate"] == 1.0
    assert result.extra["prompt_version"] == "analyzer_v1" and result.extra["model"] == "tiny-llama"
    (post,) = _posts(stub)
    assert post["headers"]["Authorization"] == "Bearer sk-test"
    assert post["body"]["model"] == "tiny-llama" and post["body"]["temperature"] == 0.0
    assert "rank-1 on node-0" in post["body"]["messages"][-1]["content"]


def test_malformed_then_valid_is_retried_with_the_reason(stub: Stub, case: CaseView):
    stub.script = [MALFORMED, VALID]
    result = explain(case, "openai")
    assert result.status == "ok"
    assert result.extra["format_attempts"] == 2 and result.extra["format_valid_rate"] == 0.5
    assert len(result.extra["format_errors"]) == 1
    second = _posts(stub)[1]["body"]["messages"]
    assert second[-2] == {"role": "assistant", "content": MALFORMED}
    assert "not valid" in second[-1]["content"] and "unknown key 'fault'" in second[-1]["content"]


def test_invented_component_counts_as_invalid(stub: Stub, case: CaseView):
    stub.script = [INVENTED, VALID]
    result = explain(case, "openai")
    assert result.extra["format_attempts"] == 2
    assert "gpu-7" in result.extra["format_errors"][0]


def test_always_malformed_gives_up_and_records_the_rate(stub: Stub, case: CaseView, monkeypatch):
    monkeypatch.setenv("CHAOSBENCH_LLM_MAX_ATTEMPTS", "2")
    stub.script = [MALFORMED, MALFORMED]
    result = explain(case, "openai")
    assert result.status == "failed" and result.explanation is None
    assert result.extra["valid_format"] is False and result.extra["format_valid_rate"] == 0.0
    assert result.extra["format_attempts"] == 2 and len(_posts(stub)) == 2
    assert "no valid <analysis> block in 2 attempt(s)" in result.error and "\n" not in result.error


def test_model_from_the_endpoint_when_not_set(stub: Stub, case: CaseView, monkeypatch):
    monkeypatch.delenv("CHAOSBENCH_LLM_MODEL")
    monkeypatch.delenv("CHAOSBENCH_LLM_API_KEY")
    stub.script = [VALID]
    result = explain(case, "openai")
    assert result.extra["model"] == "stub-model"
    assert "Authorization" not in _posts(stub)[0]["headers"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("script", "env", "message"),
    [
        ([("status", 500, "boom\nstack")], {}, "answered HTTP 500: boom stack"),
        ([("raw", "<html>")], {}, "did not answer JSON"),
        ([("raw", '{"choices": []}')], {}, "not a chat-completion response"),
        ([("sleep", 1.5)], {"CHAOSBENCH_LLM_TIMEOUT": "0.3"}, "did not answer within 0.3 s"),
    ],
)
def test_bad_endpoint_is_one_clear_line(stub: Stub, case: CaseView, monkeypatch, script, env, message):
    stub.script = list(script)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(LLMUnavailable) as err:
        explain(case, "openai")
    assert message in str(err.value) and "\n" not in str(err.value) and err.value.exit_code == 3


def test_unreachable_endpoint(case: CaseView, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CHAOSBENCH_LLM_BASE_URL", f"http://127.0.0.1:{_free_port()}/v1")
    monkeypatch.setenv("CHAOSBENCH_LLM_MODEL", "m")
    with pytest.raises(LLMUnavailable, match="cannot reach the LLM endpoint http://127.0.0.1:"):
        explain(case, "openai")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "needs CHAOSBENCH_LLM_BASE_URL"),
        ({"CHAOSBENCH_LLM_BASE_URL": "ftp://x"}, "not an http(s) URL"),
        ({"CHAOSBENCH_LLM_BASE_URL": "http://x", "CHAOSBENCH_LLM_TIMEOUT": "soon"}, "is not a number"),
        ({"CHAOSBENCH_LLM_BASE_URL": "http://x", "CHAOSBENCH_LLM_MAX_ATTEMPTS": "0"}, "greater than 0"),
    ],
)
def test_configuration_errors(env: dict, message: str):
    with pytest.raises(InputInvalid, match=message.replace("(", r"\(").replace(")", r"\)")):
        LLMConfig.from_env(env)


def test_configuration_from_env():
    cfg = LLMConfig.from_env({"CHAOSBENCH_LLM_BASE_URL": "http://h:8000/v1/", "CHAOSBENCH_LLM_MAX_ATTEMPTS": "5"})
    assert cfg.base_url == "http://h:8000/v1" and cfg.max_attempts == 5 and cfg.model is None and cfg.api_key is None


def test_nothing_in_the_default_path_needs_the_network(case: CaseView, monkeypatch: pytest.MonkeyPatch):
    import httpx

    def refuse(*a, **k):
        raise AssertionError("network used")

    monkeypatch.setattr(httpx.Client, "request", refuse)
    assert explain(case).status == "ok"

