"""`genco serve`: the HTTP service of CONTRACT.md section 3 (FastAPI).

    POST /v1/select   {"requests": [request rows], "greedy": bool}  ->  {"selections": [...], "model_version": "..."}
    GET  /healthz     200 once the model is loaded, with its model_version
    GET  /metrics     Prometheus text

The body goes through the same rules as a file's rows (genco.contract.RowChecker: the row's own rules, unique
request ids, the model's feature lengths and components), so the command line and the server cannot
disagree. Limits are checked before the work they bound: the body's size before it is read (413), its
media type (415), its request count before any request is validated (413). A broken rule is answered with
the FastAPI error shape, naming the field, never echoing the input:

    {"detail": [{"loc": ["body", "requests", 3, "user", 0], "type": "non-finite-number", "msg": "..."}]}

Serving a team can run: concurrent calls are answered together (genco.batching), a new model written into
the served folder by `genco train --out` is picked up without a restart (ModelReloader: each call is
validated against and answered by one model version, named in its answer), and with `log_decisions` every
served decision is written as a log row without its click (genco.decisions), for `genco join`.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import gc
import json
import os
import socket
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from genco.batching import MicroBatcher
from genco.checkpoint import load_model
from genco.contract import BodyError, Limits, Request, Selection, parse_select_body
from genco.decisions import DecisionLog
from genco.errors import BadRowError, GencoInputError
from genco.lean import GreedyProgram, greedy_program
from genco.select import SelectConfig, select_requests
from genco.serve_config import ServeConfig


class SelectBody(BaseModel):
    """The body of POST /v1/select (documentation: the server parses it with genco.contract.parse_select_body)."""

    model_config = ConfigDict(strict=True)
    requests: list[Request] = Field(description="Request rows (CONTRACT.md section 1), at most --max-requests.")
    greedy: bool = Field(True, description="True: the best combination found (propensity 1, the same answer for "
                                           "the same request); false: explore, with propensities.")


class SelectAnswer(BaseModel):
    selections: list[Selection]
    model_version: str


@dataclass(eq=False)
class ServedModel:
    """One loaded model version. Calls hold the one they were validated against until they are answered."""

    model: Any
    version: str
    program: GreedyProgram | None = None  # answers greedy best-of-k and argmax calls (genco.lean)

    @classmethod
    def load(cls, directory: Path, mode: str = SelectConfig.mode, runtime: str = "torch", threads: int = 0,
             previous: "ServedModel | None" = None) -> "ServedModel":
        model, meta = load_model(directory)
        program = greedy_program(model, mode, runtime, threads, previous.program if previous else None)
        return cls(model, meta["model_version"], program)


class ModelReloader:
    """Watches MODEL/model.safetensors and swaps in a new version once it is there, whole (genco.checkpoint writes
    it by an atomic rename, with its description inside). A folder that fails to load keeps the old version
    serving and counts a failed reload; the next change is tried again."""

    def __init__(self, directory: Path, every_seconds: float, on_reload, load):
        self.directory, self.every, self.on_reload, self.load = directory, every_seconds, on_reload, load
        self.signature = self._signature()
        self.current = load(directory)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="genco-reload", daemon=True)
        if every_seconds > 0:
            self.thread.start()

    def _signature(self) -> tuple | None:
        try:
            stat = (self.directory / "model.safetensors").stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def check(self) -> None:
        """Load the folder's model if it changed since the last look."""
        signature = self._signature()
        if signature is None or signature == self.signature:
            return
        self.signature = signature
        try:
            fresh = self.load(self.directory, previous=self.current)
        except Exception as exc:  # whatever went wrong, the old version keeps serving
            self.on_reload("failed", str(exc) if isinstance(exc, GencoInputError) else f"{type(exc).__name__}: {exc}")
            return
        if fresh.version != self.current.version:
            self.current = fresh  # one reference swap: a call sees the old version or the new, whole
            self.on_reload("ok", fresh.version)

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self.check()

    def stop(self) -> None:
        self._stop.set()


def _error(status: int, loc: list, rule: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc, "type": rule, "msg": message}]}, status_code=status)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: HTTPRequest, limit: int) -> bytes:
    """The body, refused (BodyError 413) as soon as it is known to pass `limit` bytes: from Content-Length before
    reading anything, or while streaming a body sent without one."""
    if not _is_json(request.headers.get("content-type", "")):
        raise BodyError(415, ("header", "content-type"), "unsupported-media-type",
                        f"send the body as Content-Type: application/json, not {request.headers.get('content-type')!r}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyError(413, ("body",), "body-too-large", f"the body has {declared} bytes, the limit is {limit} (--max-body-bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyError(413, ("body",), "body-too-large", f"the body passes the limit of {limit} bytes (--max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


class _Metrics:
    """What /metrics reports (Prometheus)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.calls = Counter("genco_select_calls_total", "POST /v1/select calls by outcome", ["outcome"], registry=registry)
        self.answered = Counter("genco_selections_total", "Selections answered", registry=registry)
        self.latency = Histogram("genco_select_seconds", "Time to answer POST /v1/select", registry=registry,
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.batch_requests = Histogram("genco_batch_requests", "Requests answered by one forward pass", registry=registry,
                                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096))
        self.batch_calls = Histogram("genco_batch_calls", "HTTP calls answered by one forward pass", registry=registry,
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.model = Gauge("genco_model_info", "The model version serving (value 1)", ["model_version"], registry=registry)
        self.reloads = Counter("genco_model_reloads_total", "Model reloads by outcome", ["outcome"], registry=registry)
        self.decisions = Counter("genco_decisions_logged_total", "Decisions written to the decision log", registry=registry)

    def serving(self, version: str) -> None:
        self.model.clear()
        self.model.labels(version).set(1)


def create_app(model_dir: str | Path, select_config: SelectConfig | None = None, limits: Limits | None = None,
               serve_config: ServeConfig | None = None) -> FastAPI:
    """Load the model (errors are GencoInputError: a bad folder stops start-up with exit 2) and build the app."""
    model_dir = Path(model_dir)
    config = select_config or SelectConfig()
    limits = limits or Limits()
    serving = serve_config or ServeConfig()
    if serving.threads:
        torch.set_num_threads(serving.threads)
    metrics = _Metrics()

    def reloaded(outcome: str, detail: str) -> None:
        metrics.reloads.labels(outcome).inc()
        if outcome == "ok":
            metrics.serving(detail)
        from genco import console

        console.note(f"model reload {outcome}: {detail}")

    load = functools.partial(ServedModel.load, mode=config.mode, runtime=serving.runtime, threads=serving.threads)
    reloader = ModelReloader(model_dir, serving.reload_seconds, reloaded, load)
    metrics.serving(reloader.current.version)
    decision_log = None
    if serving.log_decisions:
        decision_log = DecisionLog(serving.log_decisions, rotate_rows=serving.rotate_rows, rotate_seconds=serving.rotate_seconds)
    seeds = iter(range(1 << 62))

    def answer(key: tuple[ServedModel, bool], requests: list[Request]) -> list[Selection]:
        served, greedy = key
        selections = select_requests(served.model, requests, greedy=greedy, config=config, seed=next(seeds), checked=True,
                                     program=served.program)
        if decision_log is not None:
            decision_log.record(requests, selections, served.version)
            metrics.decisions.inc(len(selections))
        return selections

    def batched(calls: int, requests: int) -> None:
        metrics.batch_calls.observe(calls)
        metrics.batch_requests.observe(requests)

    batcher = MicroBatcher(answer, window_seconds=serving.batch_window_ms / 1000, max_batch=serving.max_batch, on_batch=batched)

    def close() -> None:
        """Answer what is queued, then publish the open decision file: a clean shutdown loses nothing."""
        batcher.stop()
        reloader.stop()
        if decision_log is not None:
            decision_log.close()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        close()

    app = FastAPI(title="genco", version=reloader.current.version, description="Creative combination selection (GenCO).",
                  lifespan=lifespan)
    app.state.reloader, app.state.close = reloader, close

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own validation (query parameters, other routes): the field and the rule, never the input."""
        detail = [{"loc": list(e.get("loc", ())), "type": e.get("type"), "msg": e.get("msg")} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "model_version": reloader.current.version}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics_text() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry).decode(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/select", response_model=SelectAnswer,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/SelectBody"}}}}})
    async def select(request: HTTPRequest) -> Any:
        start = time.perf_counter()
        served = reloader.current  # this call's model, from validation to answer
        try:
            raw = await read_body(request, limits.max_body_bytes)
            requests, greedy = parse_select_body(raw, limits, served.model.schema)
        except BodyError as exc:
            metrics.calls.labels({413: "too_large", 415: "unsupported_media_type"}.get(exc.status, "bad_request")).inc()
            return _error(exc.status, list(exc.loc), exc.rule, exc.message)
        except BadRowError as exc:
            metrics.calls.labels("bad_request").inc()
            return _error(422, ["body", "requests", exc.location.index, *exc.field], exc.rule, f"{exc.location}: {exc.detail}")
        try:
            selections = await asyncio.wrap_future(batcher.submit((served, True if greedy is None else greedy), requests))
        except Exception:
            metrics.calls.labels("error").inc()
            raise
        metrics.calls.labels("ok").inc()
        metrics.answered.inc(len(selections))
        metrics.latency.observe(time.perf_counter() - start)
        answer = SelectAnswer.model_construct(selections=selections, model_version=served.version)  # built from valid parts
        return Response(answer.model_dump_json(), media_type="application/json")  # not validated again by FastAPI

    def openapi() -> dict:
        """FastAPI's schema, plus the body model the route parses itself (so the docs show it)."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            body = SelectBody.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(body.pop("$defs", {}))
            schemas["SelectBody"] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    gc.freeze()  # the model, torch and the app stay: later collections scan only what calls allocate (p99)
    return app


def bind(config: ServeConfig) -> socket.socket:
    """The listening socket, bound before the model is served: a taken port or a wrong host is the user's
    input (exit 2, naming the flag), not a server crash."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise GencoInputError(f"--host {config.host!r}: not an address this machine can listen on ({exc})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise GencoInputError(f"--port {config.port}: already in use on {config.host}") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise GencoInputError(f"--port {config.port}: not allowed to listen on it (ports below 1024 need privileges)") from None
        raise GencoInputError(f"--host {config.host} --port {config.port}: cannot listen there ({exc.strerror})") from None
    sock.listen(2048)  # connections made before the server is up wait in the backlog instead of being refused
    sock.set_inheritable(True)
    return sock


#: How `genco serve --workers N` hands its settings to the worker processes (each builds its own app).
_WORKER_SETTINGS = "GENCO_SERVE_SETTINGS"


def worker_app() -> FastAPI:
    """The app of one worker process of `genco serve --workers N` (uvicorn imports and calls this)."""
    settings = json.loads(os.environ[_WORKER_SETTINGS])
    return create_app(settings["model_dir"], SelectConfig(**settings["select"]), Limits(**settings["limits"]),
                      ServeConfig(**settings["serve"]))


def run_server(model_dir: str | Path, config: ServeConfig, select_config: SelectConfig, limits: Limits) -> None:
    """`genco serve`: load the model, bind, serve until interrupted (then answer what is queued and publish the
    open decision file). With workers > 1, that many processes share the socket, each with its own model copy,
    batcher, reloader and decision files (named by process id), and torch threads split between them."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from genco import console

    app = create_app(model_dir, select_config, limits, config)  # in the parent too: a bad folder is exit 2 here
    sock = bind(config)
    host, port = sock.getsockname()[:2]
    console.note(f"serving {model_dir} ({app.state.reloader.current.version}) on http://{host}:{port} with "
                 f"{config.workers} worker(s) (POST /v1/select, GET /healthz, GET /metrics)")
    if config.workers == 1:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
        return
    app.state.close()  # the workers build their own
    threads = config.threads or max(1, (os.cpu_count() or 1) // config.workers)
    os.environ[_WORKER_SETTINGS] = json.dumps({
        "model_dir": str(model_dir), "select": asdict(select_config), "limits": asdict(limits),
        "serve": asdict(replace(config, threads=threads))})
    worker_config = uvicorn.Config("genco.serve:worker_app", factory=True, workers=config.workers, log_level="warning")
    Multiprocess(worker_config, sockets=[sock]).run()
