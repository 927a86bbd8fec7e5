"""`genco serve`: the HTTP service of CONTRACT.md section 3 (FastAPI).

    POST /v1/select   {"requests": [request rows], "greedy": bool}  ->  {"selections": [...], "model_version": "..."}
    GET  /healthz     200 once the model is loaded
    GET  /metrics     Prometheus text

The body goes through the same rules as a file's rows (genco.contract.RowChecker: the row's own rules, unique
request ids, the model's feature lengths and components), so the command line and the server cannot
disagree. Limits are checked before the work they bound: the body's size before it is read (413), its
media type (415), its request count before any request is validated (413). A broken rule is answered with
the FastAPI error shape, naming the field, never echoing the input:

    {"detail": [{"loc": ["body", "requests", 3, "user", 0], "type": "non-finite-number", "msg": "..."}]}
"""

from __future__ import annotations

import errno
import hashlib
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from genco.checkpoint import load_model
from genco.contract import BodyError, Limits, Request, Selection, parse_select_body
from genco.errors import BadRowError, GencoInputError
from genco.options import bounded, check_options
from genco.select import SelectConfig, select_requests


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = bounded(8000, ge=0, le=65535)  # 0: any free port

    def __post_init__(self) -> None:
        check_options(self)


class SelectBody(BaseModel):
    """The body of POST /v1/select (documentation: the server parses it with genco.contract.parse_select_body)."""

    model_config = ConfigDict(strict=True)
    requests: list[Request] = Field(description="Request rows (CONTRACT.md section 1), at most --max-requests.")
    greedy: bool = Field(True, description="True: the best combination found (propensity 1, the same answer for "
                                           "the same request); false: explore, with propensities.")


class SelectAnswer(BaseModel):
    selections: list[Selection]
    model_version: str


def model_version(directory: Path) -> str:
    digest = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    return f"{directory.name}@{digest[:12]}"


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


def create_app(model_dir: str | Path, select_config: SelectConfig | None = None, limits: Limits | None = None) -> FastAPI:
    """Load the model (errors are GencoInputError: a bad folder stops start-up with exit 2) and build the app."""
    model_dir = Path(model_dir)
    model, _ = load_model(model_dir)
    version = model_version(model_dir)
    config = select_config or SelectConfig()
    limits = limits or Limits()
    registry = CollectorRegistry()
    calls = Counter("genco_select_calls_total", "POST /v1/select calls by outcome", ["outcome"], registry=registry)
    answered = Counter("genco_selections_total", "Selections answered", registry=registry)
    latency = Histogram("genco_select_seconds", "Time to answer POST /v1/select", registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
    lock = threading.Lock()  # one forward pass at a time: torch already uses every core
    seed = iter(range(1 << 62))

    app = FastAPI(title="genco", version=version, description="Creative combination selection (GenCO).")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own validation (query parameters, other routes): the field and the rule, never the input."""
        detail = [{"loc": list(e.get("loc", ())), "type": e.get("type"), "msg": e.get("msg")} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "model_version": version}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    def answer(requests: list[Request], greedy: bool) -> list[Selection]:
        with lock:
            return select_requests(model, requests, greedy=greedy, config=config, seed=next(seed), checked=True)

    @app.post("/v1/select", response_model=SelectAnswer,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/SelectBody"}}}}})
    async def select(request: HTTPRequest) -> Any:
        start = time.perf_counter()
        try:
            raw = await read_body(request, limits.max_body_bytes)
            requests, greedy = parse_select_body(raw, limits, model.schema)
        except BodyError as exc:
            calls.labels({413: "too_large", 415: "unsupported_media_type"}.get(exc.status, "bad_request")).inc()
            return _error(exc.status, list(exc.loc), exc.rule, exc.message)
        except BadRowError as exc:
            calls.labels("bad_request").inc()
            return _error(422, ["body", "requests", exc.location.index, *exc.field], exc.rule, f"{exc.location}: {exc.detail}")
        selections = await run_in_threadpool(answer, requests, True if greedy is None else greedy)
        calls.labels("ok").inc()
        answered.inc(len(selections))
        latency.observe(time.perf_counter() - start)
        return SelectAnswer(selections=selections, model_version=version)

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


def run_server(model_dir: str | Path, config: ServeConfig, select_config: SelectConfig, limits: Limits) -> None:
    """`genco serve`: load the model, bind, serve until interrupted."""
    import uvicorn

    from genco import console

    app = create_app(model_dir, select_config, limits)
    sock = bind(config)
    host, port = sock.getsockname()[:2]
    console.note(f"serving {model_dir} on http://{host}:{port} (POST /v1/select, GET /healthz, GET /metrics)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="info"))
    server.run(sockets=[sock])
