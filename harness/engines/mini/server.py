"""The Ray Serve ingress: an OpenAI-compatible API in front of the engine core (runs on node-0).

Routes: POST /v1/completions, POST /v1/chat/completions (stream true|false, SSE), GET /v1/models,
GET /health, POST /start_profile, POST /stop_profile, GET /ranks, GET /metrics.

With data-parallel replicas the deployment runs ``num_replicas = data_parallel`` (set by ``deploy``) and
Serve's router spreads the requests. Replica d (Serve's replica rank, kept by a replacement replica) owns
the rank block of ``replica-<d>``; its exporter is ``replica-<d>`` (metrics_port N: N for d = 0, else
N + world_size + d). /ranks and ``metrics_targets`` list every replica's (what they published under
``<run_dir>/engine``); /start_profile and /stop_profile act on every replica's ranks.
"""


import asyncio
import json
import random
import sys
from collections.abc import AsyncIterator

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from pydantic import ValidationError
from ray import serve

from chaosbench.engines.mini.config import EngineConfig
from chaosbench.engines.mini.core import EngineCore, TokenEvent, published_replicas
from chaosbench.engines.mini.protocol import (
    ChatRequest,
    CompletionRequest,
    completion_chunk,
    error_body,
    full_response,
    new_id,
    usage,
)
from chaosbench.engines.mini.scheduler import Sequence

app = FastAPI(title="chaosbench mini engine")


def _data(obj: dict) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__



async def _finalize(raw: str) -> tuple[bool, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "chaosbench.engines.mini.profiling", raw,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode:
        return False, err.decode(errors="replace").strip().splitlines()[-1:][0] if err.strip() else "no output"
    return True, out.decode().strip()


def _replica_index(cfg: EngineConfig) -> int:
    """Which rank block this Serve replica owns: Serve's replica rank (0..num_replicas-1; a replacement takes
    the rank of the replica it replaces)."""
    if cfg.data_parallel == 1:
        return 0
    rank = serve.get_replica_context().rank
    index = int(getattr(rank, "rank", rank))
    if not 0 <= index < cfg.data_parallel:
        raise RuntimeError(f"Serve replica rank {index} outside data_parallel={cfg.data_parallel}")
    return index


def _ingress_port(cfg: EngineConfig, replica: int) -> int:
    if not cfg.metrics_port or replica == 0:
        return cfg.metrics_port
    return cfg.metrics_port + cfg.layout.world_size + replica


def _replica_targets(replicas: list[dict]) -> list[tuple[str, str]]:
    """``(replica-<d>, exporter)`` of every replica that has one, then every rank's exporter."""
    targets = [(r["replica"], r["ingress"]) for r in replicas if r.get("ingress")]
    targets += [(i["rank"], f"{i['ip']}:{i['metrics_port']}") for r in replicas for i in r["ranks"]]
    return targets


@serve.deployment(num_replicas=1, max_ongoing_requests=1024, health_check_period_s=5,
                  ray_actor_options={"num_cpus": 0, "resources": {"node-0": 0.001}})
@serve.ingress(app)
class MiniServer:
    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.model = cfg.model.name
        self.replica = _replica_index(cfg)
        self.core = EngineCore(cfg, self.replica)
        self.core.start()
        self.ip = cfg.node_ip("node-0") or ray.util.get_node_ip_address()
        self._metrics_server, _ = start_http_server(_ingress_port(cfg, self.replica),
                                                    addr=cfg.node_ip("node-0") or "0.0.0.0",
                                                    registry=self.core.metrics.registry)
        if cfg.data_parallel > 1:
            self.core.ingress_target = f"{self.ip}:{self._metrics_server.server_port}"
            self.core.call(self.core.publish).result(timeout=60)

    def metrics_targets(self) -> list[tuple[str, str]]:
        if self.cfg.data_parallel > 1:
            return _replica_targets(published_replicas(self.cfg.run_dir))
        targets = [("ingress", f"{self.ip}:{self._metrics_server.server_port}")]
        targets += [(i["rank"], f"{i['ip']}:{i['metrics_port']}") for i in self.core.infos]
        return targets

    def shutdown(self) -> None:
        self.core.shutdown()
        self._metrics_server.shutdown()

    def __del__(self) -> None:
        try:
            self.core.shutdown()
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass

    @app.get("/health")
    async def health(self) -> Response:
        ok = bool(self.core.ranks) and self.core._thread is not None and self.core._thread.is_alive()
        return Response(status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0,
                                            "owned_by": "chaosbench", "max_model_len": self.cfg.model.max_seq_len}]}

    @app.get("/ranks")
    async def ranks(self) -> list[dict]:
        if self.cfg.data_parallel > 1:
            return [dict(i) for rep in published_replicas(self.cfg.run_dir) for i in rep["ranks"]]
        return [dict(i) for i in self.core.infos]

    @app.get("/metrics")
    async def metrics(self) -> Response:
        return PlainTextResponse(generate_latest(self.core.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/start_profile")
    async def start_profile(self) -> dict:
        await asyncio.wrap_future(self.core.start_profile())
        return {"status": "profiling"}

    @app.post("/stop_profile")
    async def stop_profile(self) -> dict:
        raws = await asyncio.wrap_future(self.core.stop_profile())
        # the slow JSON rewrite runs in child processes (one per rank): the ranks keep serving meanwhile
        results = await asyncio.gather(*(_finalize(raw) for raw in raws))
        failed = [err for ok, err in results if not ok]
        if failed:
            return JSONResponse(error_body(f"trace finalize failed: {failed[0]}", 500), status_code=500)
        return {"status": "stopped", "traces": [path for _, path in results]}

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._serve(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._serve(request, chat=True)

    async def _serve(self, request: Request, chat: bool) -> Response:
        try:
            body = await request.json()
            req = ChatRequest.model_validate(body) if chat else CompletionRequest.model_validate(body)
            seq = self._sequence(req)
        except (ValidationError, ValueError, json.JSONDecodeError) as exc:
            return JSONResponse(error_body(_one_line(exc)), status_code=400)
        rid = new_id("chatcmpl" if chat else "cmpl")
        seq.rid = rid
        events = self._run(seq)
        if req.stream:
            return StreamingResponse(self._sse(rid, events, chat, req.include_usage()),
                                     media_type="text/event-stream")
        text, finish, last = [], None, None
        async for ev in events:
            text.append(ev.text)
            finish, last = ev.finish_reason, ev
        done = last.completion_tokens if last else 0
        return JSONResponse(full_response(rid, self.model, "".join(text), finish, chat, len(seq.prompt), done))

    def _sequence(self, req: CompletionRequest | ChatRequest) -> Sequence:
        text = req.prompt_text()
        prompt = list(text) if isinstance(text, list) else self.core.tokenizer.encode(text)
        if not prompt or any(not 0 <= t < self.cfg.model.vocab for t in prompt):
            raise ValueError("prompt is empty or has token ids outside the vocabulary")
        limit = self.cfg.model.max_seq_len
        max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens or 16
        if len(prompt) + max_tokens > limit:
            raise ValueError(f"This model's maximum context length is {limit} tokens; the request has "
                             f"{len(prompt)} prompt tokens and asks for {max_tokens} more")
        seed = req.seed if req.seed is not None else random.getrandbits(31)
        return Sequence(rid="", prompt=prompt, max_tokens=max_tokens, temperature=req.temperature, seed=seed,
                        ignore_eos=req.ignore_eos)

    async def _run(self, seq: Sequence) -> AsyncIterator[TokenEvent]:
        queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.core.submit(seq, lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev))
        finished = False
        try:
            while not finished:
                ev = await queue.get()
                finished = ev.finish_reason is not None
                yield ev
        finally:
            if not finished:
                self.core.abort(seq.rid)

    async def _sse(self, rid: str, events: AsyncIterator[TokenEvent], chat: bool, with_usage: bool):
        first, last = True, None
        async for ev in events:
            yield _data(completion_chunk(rid, self.model, ev.text, ev.finish_reason, chat, first))
            first, last = False, ev
        if with_usage and last is not None:
            chunk = completion_chunk(rid, self.model, "", None, chat)
            chunk["choices"], chunk["usage"] = [], usage(last.prompt_tokens, last.completion_tokens)
            yield _data(chunk)
        yield "data: [DONE]\n\n"

