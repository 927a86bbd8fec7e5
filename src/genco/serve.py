"""`genco serve`: the HTTP service of CONTRACT.md section 3 (FastAPI).

    POST /v1/select   {"requests": [request rows], "greedy": bool}  ->  {"selections": [...], "model_version": "..."}
    GET  /healthz     200 once the model is loaded
    GET  /metrics     Prometheus text

Request rows are the contract's typed `Request` model, so a malformed body is answered 422 with the
field that broke (FastAPI's validation), and a row that does not fit the model (an unknown component, a
wrong feature length) is answered 422 naming the row and the rule. The server stays up either way.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, Field

from genco.checkpoint import load_model
from genco.contract import Request, Selection
from genco.select import SelectConfig, select_requests

MAX_REQUESTS_PER_CALL = 10_000


class SelectBody(BaseModel):
    requests: list[Request] = Field(description="Request rows (CONTRACT.md section 1).")
    greedy: bool = Field(True, description="True: the best combination found; false: explore, with propensities.")


class SelectAnswer(BaseModel):
    selections: list[Selection]
    model_version: str


def model_version(directory: Path) -> str:
    digest = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    return f"{directory.name}@{digest[:12]}"


def create_app(model_dir: str | Path, select_config: SelectConfig | None = None) -> FastAPI:
    """Load the model (errors are GencoInputError: a bad folder stops start-up with exit 2) and build the app."""
    model_dir = Path(model_dir)
    model, _ = load_model(model_dir)
    version = model_version(model_dir)
    config = select_config or SelectConfig()
    registry = CollectorRegistry()
    calls = Counter("genco_select_calls_total", "POST /v1/select calls by outcome", ["outcome"], registry=registry)
    answered = Counter("genco_selections_total", "Selections answered", registry=registry)
    latency = Histogram("genco_select_seconds", "Time to answer POST /v1/select", registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
    lock = threading.Lock()  # one forward pass at a time: torch already uses every core
    seed = iter(range(1 << 62))

    app = FastAPI(title="genco", version=version, description="Creative combination selection (GenCO).")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "model_version": version}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/select", response_model=SelectAnswer)
    def select(body: SelectBody) -> SelectAnswer:
        start = time.perf_counter()
        if len(body.requests) > MAX_REQUESTS_PER_CALL:
            calls.labels("too_large").inc()
            raise HTTPException(413, detail=f"at most {MAX_REQUESTS_PER_CALL} requests per call, got {len(body.requests)}")
        for i, row in enumerate(body.requests):
            problem = model.schema.check(row)
            if problem:
                calls.labels("bad_request").inc()
                raise HTTPException(422, detail=[{"loc": ["body", "requests", i], "type": problem[0], "msg": problem[1]}])
        with lock:
            selections = select_requests(model, body.requests, greedy=body.greedy, config=config, seed=next(seed))
        calls.labels("ok").inc()
        answered.inc(len(selections))
        latency.observe(time.perf_counter() - start)
        return SelectAnswer(selections=selections, model_version=version)

    return app
