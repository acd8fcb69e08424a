"""The REST inference service: a thin FastAPI shell around the one engine (tastyrec.recommend).

Routes validate the request, call the `Engine` opened once per worker in the app's lifespan, and
return its result; nothing is ranked or filtered here. Limits (`Limits`; each answered with a
status code, never a 500):

    POST /recommendations   at most 1,000 customer ids (413 above); unknown ids -> 404;
                            a filter selection of more than 1,000 customers is served for the
                            first 1,000 (by id) with `truncated: true`; top_k 1..50 (422 outside)
    POST /score             at most 10,000 rows (413 above); missing columns -> 422; feature
                            values must be finite (NaN / Infinity -> 422)
    any request body        at most 64 MiB (`Limits.body_bytes`): 413 before anything parses it
    malformed bodies        422 naming the field: invalid JSON, a body that is not a JSON object
                            (text/plain, form data, no content type), NaN or Infinity where a
                            number goes (Python's json reads them; the 422 echoes them as strings);
                            JSON nested deeper than Python's json reads: 400
    a Redis online store that stops answering: 503

With a token (`TASTYREC_API_TOKEN`, or `create_app(token=...)`) every route but the docs needs
`Authorization: Bearer <token>`: 401 without it, 403 with a wrong one. The docs (/docs, /redoc,
/openapi.json) stay public: they describe the API, hold no customer data, and a browser opening
/docs cannot send a bearer header (its "Authorize" button sends the token with the calls it makes).

POST /admin/reload reaches one worker process; with several, it also touches a stamp file
(`ReloadSignal`) and every other worker reloads before its next request.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import os
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis import RedisError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tastyrec.config import Workspace
from tastyrec.recommend import Engine, Filters, RecommendError
from tastyrec.schemas import (LIMITS, FiltersBody, Health, Limits, Metadata, RecommendRequest, RecommendResponse,
                              ScoreRequest, ScoreResponse)

TOKEN_ENV = "TASTYREC_API_TOKEN"
HOME_ENV = "TASTYREC_HOME"
REF_ENV = "TASTYREC_SERVE_REF"  # the version or alias `tastyrec serve` hands to its workers
STAMP_ENV = "TASTYREC_SERVE_RELOAD_STAMP"  # the workers' shared reload stamp file
log = logging.getLogger(__name__)

# ---- reloading several worker processes --------------------------------------------------------
class ReloadSignal:
    """A file whose modification time says "reload": the worker that answers POST /admin/reload
    touches it, and every worker reloads once before its next request when it is newer than the
    last reload it saw (a stat per request)."""

    def __init__(self, path: Path):
        self.path = path
        self.seen = self._stamp()
        self._lock = threading.Lock()

    def _stamp(self) -> int:
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def pending(self) -> bool:
        return self._stamp() > self.seen

    def send(self) -> None:
        self.path.touch()
        self.seen = self._stamp()

    def follow(self, engine: Engine) -> None:
        """Reload once per stamp (blocking; other threads wait for it). A failed reload keeps the
        model and is logged: requests go on being served."""
        with self._lock:
            stamp = self._stamp()
            if stamp <= self.seen:
                return
            self.seen = stamp
            try:
                engine.reload()
            except RecommendError as e:
                log.error("reload failed, still serving version %s: %s", engine.model_info["version"], e)


# ---- malformed requests: a 4xx with a message, never a 500 -------------------------------------
class BodyLimit:
    """A pure ASGI middleware: 413 for a request body over `max_bytes`, before anything parses it.
    A Content-Length over the limit is refused at once; a body without one (chunked) is counted as
    it streams in and refused at the chunk that crosses the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request bodies are limited to {self.max_bytes:,} bytes"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # FastAPI re-raises an HTTPException met reading the body
                raise HTTPException(413, detail)
            return message

        await self.app(scope, counted, send)


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats as the strings a request spells them ("NaN", "Infinity"):
    Python's json reads them in a request body but refuses to write them in a response."""
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# ---- auth and the engine, as dependencies ------------------------------------------------------
bearer = HTTPBearer(auto_error=False, description=f"required when {TOKEN_ENV} is set")


# `async def`: cheap checks that need no thread of the pool.
async def require_token(request: Request,
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """401 without a bearer token, 403 with a wrong one; nothing to check when no token is set."""
    expected: str | None = request.app.state.token
    if not expected:
        return
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(403, "wrong bearer token")


async def get_engine(request: Request) -> Engine:
    engine, signal = request.app.state.engine, request.app.state.reload_signal
    if signal is not None and signal.pending():  # another worker was told to reload
        await run_in_threadpool(signal.follow, engine)
    return engine


async def get_limits(request: Request) -> Limits:
    return request.app.state.limits


async def get_engine_slots(request: Request) -> threading.BoundedSemaphore:
    return request.app.state.engine_slots


EngineDep = Annotated[Engine, Depends(get_engine)]
LimitsDep = Annotated[Limits, Depends(get_limits)]
EngineSlotsDep = Annotated[threading.BoundedSemaphore, Depends(get_engine_slots)]
router = APIRouter(dependencies=[Depends(require_token)])


# ---- routes: validate, call the engine, return -------------------------------------------------
# Plain `def`: FastAPI runs them in its thread pool, so scoring never blocks the event loop.
@router.get("/health", response_model=Health, tags=["service"])
def health(engine: EngineDep) -> dict[str, Any]:
    """The model version this worker serves."""
    info = engine.model_info
    return {"status": "ok", "model": info["name"], "version": info["version"], "alias": info["alias"],
            "kind": info["kind"], "loaded_at": info["loaded_at"], "device": str(engine.predictor.device)}


@router.post("/recommendations", response_model=RecommendResponse, tags=["recommendations"],
             responses={404: {"description": "unknown customer ids"}, 413: {"description": "too many ids"}})
def recommendations(body: RecommendRequest, engine: EngineDep, limits: LimitsDep,
                    slots: EngineSlotsDep) -> dict[str, Any]:
    """Top-k menu items per customer, with their purchase history: by ids, or by filters."""
    if body.customer_ids is not None and len(body.customer_ids) > limits.customer_ids:
        raise HTTPException(413, f"at most {limits.customer_ids:,} customer ids per request "
                                 f"(got {len(body.customer_ids):,})")
    f = body.filters or FiltersBody()
    filters = Filters(tuple(f.country), tuple(f.city), tuple(f.brand), f.trucks_not_visited, f.items_not_ordered)
    try:
        with slots:
            result = engine.recommend(customer_ids=body.customer_ids, filters=filters, top_k=body.top_k,
                                      limit=None if body.customer_ids is not None else limits.filter_customers)
    except RecommendError as e:
        raise HTTPException(422, str(e)) from None
    if result.unknown_customers:
        raise HTTPException(404, f"unknown customer ids: {', '.join(map(str, result.unknown_customers))}")
    return result.to_dict()


@router.post("/score", response_model=ScoreResponse, tags=["model"],
             responses={413: {"description": "too many rows"}})
def score(body: ScoreRequest, engine: EngineDep, limits: LimitsDep, slots: EngineSlotsDep) -> dict[str, Any]:
    """P(purchase) for raw feature rows: the model's forward, preprocessing included."""
    if len(body.rows) > limits.score_rows:
        raise HTTPException(413, f"at most {limits.score_rows:,} rows per request (got {len(body.rows):,})")
    predictor = engine.predictor  # one model for the whole request, whatever a reload does
    pre = predictor.preprocessor
    columns = pre.input_columns  # the collaborative features are computed from item + history bag
    missing = [c for c in columns if any(c not in row.model_fields_set for row in body.rows)]
    if missing:
        raise HTTPException(422, f"rows lack feature columns: {', '.join(missing)}")
    frame = pd.DataFrame([row.model_dump(include=set(columns)) for row in body.rows], columns=columns)
    with slots:
        scores = predictor.predict(frame)
    return {"scores": scores.tolist()}


@router.get("/metadata", response_model=Metadata, tags=["model"])
def metadata(engine: EngineDep) -> dict[str, Any]:
    """The served model: its feature columns, kind, hyperparameters and test metrics."""
    from tastyrec.registry import list_versions

    predictor, info = engine.predictor, engine.model_info
    pre = predictor.preprocessor
    metrics = next((v["metrics"] for v in list_versions(engine.ws) if v["version"] == info["version"]), {})
    return {"model": info, "kind": predictor.kind,
            "features": {"sparse": list(pre.sparse), "dense": list(pre.dense), "multi_hot": list(pre.multi_hot)},
            "config": predictor.model.config.to_dict(), "test_metrics": metrics}


@router.post("/admin/reload", response_model=Health, tags=["service"],
             responses={409: {"description": "the reference names no loadable model; the old one stays"}})
def reload(request: Request, engine: EngineDep) -> dict[str, Any]:
    """Load the version the reference names now (a new champion), in every worker; requests in
    flight finish on the model they started with."""
    try:
        engine.reload()
    except RecommendError as e:
        raise HTTPException(409, f"{e}; still serving version {engine.model_info['version']}") from None
    if request.app.state.reload_signal is not None:
        request.app.state.reload_signal.send()
    return health(engine)


# ---- the app ------------------------------------------------------------------------------------
def create_app(ws: Workspace, ref: str | int = "champion", token: str | None = None,
               engine: Engine | None = None, limits: Limits = LIMITS, reload_stamp: Path | None = None) -> FastAPI:
    """The service for workspace `ws`, serving the version `ref` names (re-resolved on reload).

    `token`: the bearer token every route requires (None or empty: none). `engine`: an Engine
    already open (the single-worker `tastyrec serve` opens it to report errors before listening);
    otherwise the lifespan opens one. `limits`: what one request may ask for. `reload_stamp`:
    the file several worker processes share to reload together (see ReloadSignal).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # the stamp is read before the model loads: a reload sent while this worker is still
        # loading (the old champion) makes it reload before its first request, never missed
        signal = ReloadSignal(reload_stamp) if reload_stamp else None
        app.state.engine = engine or Engine(ws, ref)
        app.state.reload_signal = signal
        yield
        app.state.engine = None

    app = FastAPI(title="tastyrec", lifespan=lifespan,
                  description="Menu-item recommendations for Tasty Bytes loyalty customers (tastyrec-dlrm).")
    app.state.token = token or None
    app.state.limits = limits
    app.state.engine_slots = threading.BoundedSemaphore(limits.engine_concurrency)
    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=limits.body_bytes)

    @app.exception_handler(RequestValidationError)
    async def malformed_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own 422, naming the field; the input it echoes is made JSON-safe, or a NaN in
        the body would fail to encode here, a 500."""
        return JSONResponse({"detail": json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(RedisError)
    async def online_store_down(request: Request, exc: RedisError) -> JSONResponse:
        """A Redis online store that stops answering mid-service: 503, the model keeps loaded."""
        return JSONResponse({"detail": f"the online store (Redis) is unavailable: {exc}"}, status_code=503)

    return app


def app_from_env() -> FastAPI:
    """uvicorn's factory for several workers: each worker builds its app from the environment
    `tastyrec serve` sets (TASTYREC_HOME, TASTYREC_SERVE_REF, TASTYREC_API_TOKEN and
    TASTYREC_SERVE_RELOAD_STAMP)."""
    stamp = os.environ.get(STAMP_ENV)
    return create_app(Workspace.from_env(os.environ.get(HOME_ENV)), os.environ.get(REF_ENV) or "champion",
                      os.environ.get(TOKEN_ENV), reload_stamp=Path(stamp) if stamp else None)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1); any other host is public."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
