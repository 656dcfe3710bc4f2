"""The Locust load for chaosbench: streaming OpenAI completions, one record per request.

The only module of chaosbench that imports locust (the import monkey-patches the
process with gevent), so it only ever runs inside the Locust process started by
harness/load/driver.py. Configuration comes from the JSON file named by
``CHAOSBENCH_LOAD_CONFIG`` (see driver.LoadConfig).

Each request appends one JSON line to ``requests.jsonl``: ``start`` (unix s),
``ttft`` (s), ``itl`` (inter-token gaps, s), ``e2e`` (s), ``tokens`` (streamed
output tokens), ``status`` (ok|error), ``code`` (HTTP status or 0), ``error``.
TTFT and TPOT are also fired as Locust request events so the Locust CSVs carry them.
Arrivals: per user, exponential (poisson) or fixed (constant) gaps at ``qps/users``;
``qps: 0`` is a closed loop.
"""

from __future__ import annotations

import json
import os
import random
import time

from locust import HttpUser, events, task

CONFIG = json.loads(open(os.environ["CHAOSBENCH_LOAD_CONFIG"]).read()) if "CHAOSBENCH_LOAD_CONFIG" in os.environ else {}
WORDS = ("the of and to in is was for on that with as by at from his an were are which this be or has had "
         "not but one their all can more when its into time two may only new some these any so other").split()
_state = {"sent": 0, "out": None}


@events.test_start.add_listener
def _on_start(environment, **_kw):
    _state["out"] = open(CONFIG["requests_path"], "a", buffering=1)
    with open(CONFIG["started_path"] + ".tmp", "w") as fh:
        json.dump({"started_at": time.time()}, fh)
    os.replace(CONFIG["started_path"] + ".tmp", CONFIG["started_path"])


@events.test_stop.add_listener
def _on_stop(environment, **_kw):
    if _state["out"] is not None:
        _state["out"].close()
        _state["out"] = None


class _Stream:
    """Consume an SSE body: time of each token chunk, and the first error if any."""

    def __init__(self, t0: float):
        self.t0, self.token_times, self.error = t0, [], None

    def feed(self, line: bytes) -> bool:
        if not line.startswith(b"data:"):
            return True
        data = line[5:].strip()
        if data == b"[DONE]":
            return False
        try:
            chunk = json.loads(data)
        except ValueError:
            self.error = f"bad SSE chunk: {data[:80]!r}"
            return False
        if "error" in chunk:
            self.error = str(chunk["error"])[:200]
            return False
        if chunk.get("choices"):
            self.token_times.append(time.time())
        return True


class LLMUser(HttpUser):
    _count = 0

    def on_start(self) -> None:
        LLMUser._count += 1
        self.rng = random.Random(int(CONFIG["seed"]) * 100_003 + LLMUser._count)
        self.rate = float(CONFIG["qps"]) / max(1, int(CONFIG["users"]))
        self.next_at = time.time() + (self.rng.uniform(0, 1 / self.rate) if self.rate > 0 else 0)

    def wait_time(self) -> float:
        if self.rate <= 0:
            return 0.0
        gap = self.rng.expovariate(self.rate) if CONFIG["arrival"] == "poisson" else 1 / self.rate
        self.next_at = max(self.next_at + gap, time.time())  # no catch-up burst after a slow period
        return max(0.0, self.next_at - time.time())

    def _prompt(self) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(int(CONFIG["prompt_tokens"])))

    @task
    def complete(self) -> None:
        if _state["sent"] >= int(CONFIG["max_requests"]):
            self.environment.runner.quit()
            return
        _state["sent"] += 1
        body = {"model": CONFIG["model"], "prompt": self._prompt(), "max_tokens": int(CONFIG["output_tokens"]),
                "stream": bool(CONFIG["streaming"]), "temperature": 0.0}
        start = time.time()
        stream, code, tokens = _Stream(start), 0, 0
        try:
            with self.client.post("/v1/completions", json=body, stream=bool(CONFIG["streaming"]),
                                  catch_response=True, name="/v1/completions") as resp:
                code = resp.status_code
                if code != 200:
                    stream.error = f"HTTP {code}: {resp.text[:200]}"
                elif CONFIG["streaming"]:
                    for line in resp.iter_lines():
                        if line and not stream.feed(line):
                            break
                else:
                    tokens = int(resp.json().get("usage", {}).get("completion_tokens", 0))
                    stream.token_times = [time.time()]
                if stream.error:
                    resp.failure(stream.error)
                else:
                    resp.success()
        except Exception as exc:  # noqa: BLE001 - a broken connection is a failed request, not a crash
            stream.error = f"{type(exc).__name__}: {exc}"[:200]
        self._record(start, stream, code, tokens)

    def _record(self, start: float, stream: _Stream, code: int, tokens: int) -> None:
        end = time.time()
        times = stream.token_times
        ttft = times[0] - start if times else None
        itl = [round(b - a, 6) for a, b in zip(times, times[1:])]
        tokens = tokens or len(times)
        rec = {"start": round(start, 6), "ttft": None if ttft is None else round(ttft, 6), "itl": itl,
               "e2e": round(end - start, 6), "tokens": tokens, "prompt_tokens": int(CONFIG["prompt_tokens"]),
               "status": "error" if stream.error else "ok", "code": code, "error": stream.error}
        if _state["out"] is not None:
            _state["out"].write(json.dumps(rec) + "\n")
        if ttft is not None and not stream.error:
            events.request.fire(request_type="TTFT", name="ttft", response_time=ttft * 1000, response_length=0,
                                exception=None, context={})
            if tokens > 1:
                tpot = (end - times[0]) / (tokens - 1)
                events.request.fire(request_type="TPOT", name="tpot", response_time=tpot * 1000,
                                    response_length=0, exception=None, context={})
