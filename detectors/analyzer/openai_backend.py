"""Backend ``openai``: any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, a hosted API).

Configuration from the environment:
  CHAOSBENCH_LLM_BASE_URL      e.g. http://127.0.0.1:8000/v1 (required)
  CHAOSBENCH_LLM_MODEL         model name; if unset, the first id of GET {base}/models
  CHAOSBENCH_LLM_API_KEY       bearer token (optional: local servers need none)
  CHAOSBENCH_LLM_TIMEOUT       seconds per request (default 60)
  CHAOSBENCH_LLM_MAX_ATTEMPTS  answers asked for before giving up on the format (default 3)

An answer that fails the strict parser is sent back with the parser's message and a
request for a corrected block; every attempt counts towards the valid-format rate.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from chaosbench.detectors.analyzer.context import AnalysisContext
from chaosbench.detectors.analyzer.output import Analysis, AnalysisFormatError, parse
from chaosbench.detectors.analyzer.prompt import PROMPT_VERSION, build_prompt
from chaosbench.errors import ChaosbenchError, InputInvalid, PreflightFailed

SYSTEM = "You are a precise root-cause analyst. Answer only with the requested <analysis> block."


class LLMUnavailable(PreflightFailed):
    """The endpoint cannot be reached, times out, or does not speak the chat-completions protocol."""


class LLMFormatError(ChaosbenchError):
    """The model never produced a valid <analysis> block within the allowed attempts."""

    def __init__(self, message: str, attempts: int, errors: tuple[str, ...]):
        super().__init__(message)
        self.attempts = attempts
        self.errors = errors


@dataclass(frozen=True)
class LLMConfig:
    base_url: str
    model: str | None
    api_key: str | None = None
    timeout_s: float = 60.0
    max_attempts: int = 3
    temperature: float = 0.0
    max_tokens: int = 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LLMConfig:
        env = os.environ if env is None else env
        base = env.get("CHAOSBENCH_LLM_BASE_URL", "").strip()
        if not base:
            raise InputInvalid(
                "the openai backend needs CHAOSBENCH_LLM_BASE_URL (an OpenAI-compatible endpoint, "
                "e.g. http://127.0.0.1:8000/v1); CHAOSBENCH_LLM_MODEL and CHAOSBENCH_LLM_API_KEY are optional"
            )
        if not base.startswith(("http://", "https://")):
            raise InputInvalid(f"CHAOSBENCH_LLM_BASE_URL={base!r} is not an http(s) URL")
        return cls(
            base_url=base.rstrip("/"),
            model=env.get("CHAOSBENCH_LLM_MODEL") or None,
            api_key=env.get("CHAOSBENCH_LLM_API_KEY") or None,
            timeout_s=_env_number(env, "CHAOSBENCH_LLM_TIMEOUT", 60.0, float),
            max_attempts=int(_env_number(env, "CHAOSBENCH_LLM_MAX_ATTEMPTS", 3, int)),
        )


def _env_number(env: Mapping[str, str], name: str, default: float, kind: type) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise InputInvalid(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise InputInvalid(f"{name} must be greater than 0, got {raw}")
    return value


@dataclass(frozen=True)
class LLMAnswer:
    analysis: Analysis
    text: str
    model: str
    attempts: int  # answers asked for
    valid_attempts: int  # answers that passed the parser (1 when it succeeds)
    errors: tuple[str, ...]  # parser messages of the invalid answers

    def stats(self) -> dict[str, Any]:
        return format_stats(self.attempts, self.valid_attempts, self.errors) | {"prompt_version": PROMPT_VERSION}


def format_stats(attempts: int, valid: int, errors: tuple[str, ...]) -> dict[str, Any]:
    return {
        "format_attempts": attempts,
        "format_valid_attempts": valid,
        "format_valid_rate": round(valid / attempts, 4) if attempts else 0.0,
        "format_errors": list(errors),
    }


class ChatClient:
    """The two calls of the OpenAI protocol the Analyzer uses, with one-line errors."""

    def __init__(self, cfg: LLMConfig, transport: httpx.BaseTransport | None = None):
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self.cfg = cfg
        self._http = httpx.Client(base_url=cfg.base_url, headers=headers, timeout=cfg.timeout_s, transport=transport)

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        url = f"{self.cfg.base_url}{path}"
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TimeoutException:
            raise LLMUnavailable(f"LLM endpoint {url} did not answer within {self.cfg.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise LLMUnavailable(f"cannot reach the LLM endpoint {url}: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            body = " ".join(resp.text.split())[:200]
            raise LLMUnavailable(f"LLM endpoint {url} answered HTTP {resp.status_code}: {body}")
        try:
            return resp.json()
        except ValueError:
            raise LLMUnavailable(f"LLM endpoint {url} did not answer JSON") from None

    def model(self) -> str:
        if self.cfg.model:
            return self.cfg.model
        data = self._request("GET", "/models")
        try:
            return str(data["data"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise LLMUnavailable("set CHAOSBENCH_LLM_MODEL: the endpoint lists no model at /models") from None

    def chat(self, model: str, messages: list[dict[str, str]]) -> str:
        payload = {"model": model, "messages": messages, "temperature": self.cfg.temperature,
                   "max_tokens": self.cfg.max_tokens}
        data = self._request("POST", "/chat/completions", json=payload)
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMUnavailable(f"{self.cfg.base_url}/chat/completions: not a chat-completion response") from None
        return content if isinstance(content, str) else ""


def ask(ctx: AnalysisContext, cfg: LLMConfig, transport: httpx.BaseTransport | None = None) -> LLMAnswer:
    """Ask for an analysis, re-asking with the parser's complaint until valid or out of attempts."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": build_prompt(ctx)}]
    errors: list[str] = []
    components = set(ctx.components)
    with ChatClient(cfg, transport) as client:
        model = client.model()
        for attempt in range(1, cfg.max_attempts + 1):
            text = client.chat(model, messages)
            try:
                analysis = parse(text, components)
            except AnalysisFormatError as exc:
                errors.append(str(exc))
                messages += [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": f"That answer is not valid ({exc}). Reply again with exactly one "
                                                "corrected <analysis> block in the required format."},
                ]
                continue
            return LLMAnswer(analysis, text, model, attempt, 1, tuple(errors))
    n = cfg.max_attempts
    raise LLMFormatError(
        f"the LLM ({model}) gave no valid <analysis> block in {n} attempt(s) (valid-format rate 0/{n}); "
        f"last problem: {errors[-1]}",
        n,
        tuple(errors),
    )
