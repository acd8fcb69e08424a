"""The REST inference service: a thin FastAPI shell around the one engine (tastyrec.recommend).

Routes validate the request, call the `Engine` opened once per worker in the app's lifespan, and
return its result; nothing is ranked or filtered here. Limits (`Limits`; each answered with a
status code, never a 500):

    POST /recommendations   at most 1,000 customer ids (413 above); unknown ids are listed in
                            `unknown_customers`, 404 when none is known; a filter value close to a
                            known one but not it ("Hamburgg") -> 422 naming it (tastyrec.matching);
                            a filter selection of more than 1,000 customers is served for the
                            first 1,000 (by id) with `truncated: true`; top_k 1..50 (422 outside)
    POST /score             at most 10,000 rows (413 above); missing columns -> 422; feature
                            values must be finite (NaN / Infinity -> 422)
    request bodies          /recommendations 1 MiB, /score 12 MiB, any other route 16 KiB
                            (`Limits`): 413 by Content-Length before a byte of the body is read,
                            or at the chunk that crosses it; a body not all there 30 s after the
                            request began: 408 (`Limits.body_seconds`), and the connection closed
    malformed bodies        422 naming the field: invalid JSON, a body that is not a JSON object
                            (text/plain, form data, no content type), NaN or Infinity where a
                            number goes (Python's json reads them; the 422 echoes them as strings,
                            any echoed value cut to 300 characters, at most 20 errors listed);
                            JSON nested deeper than Python's json reads: 400
    a Redis online store that stops answering: 503

With a token (`TASTYREC_API_TOKEN`, or `create_app(token=...)`) every route but the docs needs
`Authorization: Bearer <token>`: 401 without it, 403 with a wrong one. The docs (/docs, /redoc,
/openapi.json and their files under /docs-assets) stay public: they describe the API, hold no
customer data, and a browser opening /docs cannot send a bearer header (its "Authorize" button
sends the token with the calls it makes). The token is checked in the ASGI layer
(`RequestGuard`), before the body is read, and again by each route (`require_token`). A token
must be printable ASCII, at least 16 characters, without surrounding whitespace
(`validate_token`): `create_app` and `tastyrec serve` refuse others.

/docs and /redoc load Swagger UI's and ReDoc's files from the service itself (DOCS_ASSETS), not
from a CDN as FastAPI's own pages do: they work on a machine without internet, and no page of the
service asks a third party for anything (ReDoc's Google fonts included).

Without a token the service is for the machine it runs on (`tastyrec serve` listens on loopback
only), and a browser on that machine must not become a way in: a Host that is not a loopback name
(DNS rebinding: a web page whose name now points at 127.0.0.1) gets 403, and so does a write sent
cross-site (an Origin that is not loopback, or Sec-Fetch-Site: cross-site): a page may POST
text/plain to any address without asking first. With a token, the token is the protection: a page
cannot add a bearer header to a cross-site request (it would need CORS, which is not enabled).

uvicorn has no timeout for a request's line and headers: a client that sends them slowly holds
its connection and file descriptor. Exposed beyond the machine, the service belongs behind a
reverse proxy that times them out (docs/serving.md, "Security"); `SERVER_SETTINGS` has what uvicorn does.

POST /admin/reload reaches one worker process; with several, it also touches a stamp file
(`ReloadSignal`) and every other worker reloads before its next request.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from redis import RedisError
from starlette.datastructures import Headers
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tastyrec.config import Workspace
from tastyrec.features.stores import OnlineStoreError
from tastyrec.recommend import Engine, Filters, RecommendError
from tastyrec.schemas import (LIMITS, FiltersBody, Health, Limits, Metadata, RecommendRequest, RecommendResponse,
                              ScoreRequest, ScoreResponse)

TOKEN_ENV = "TASTYREC_API_TOKEN"
HOME_ENV = "TASTYREC_HOME"
REF_ENV = "TASTYREC_SERVE_REF"  # the version or alias `tastyrec serve` hands to its workers
STAMP_ENV = "TASTYREC_SERVE_RELOAD_STAMP"  # the workers' shared reload stamp file
# At least this many characters: the token is all that guards a public address, and a short one is
# likely a word someone typed ("secret", "changeme"); `secrets.token_urlsafe(16)` gives 22.
MIN_TOKEN_CHARS = 16
# The 422's echo of a request's values (FastAPI echoes the whole invalid input): a few hundred
# characters of each, for at most 20 errors, rather than megabytes back for a large invalid body.
ECHO_CHARS = 300
ECHO_ERRORS = 20
DOCS_URL, REDOC_URL = "/docs", "/redoc"
# Swagger UI's and ReDoc's scripts, style sheet and favicon, served here: the static files of the
# PyPI package fastapi-offline (pinned in pyproject.toml; MIT; Swagger UI 5 and ReDoc 2 bundles).
DOCS_ASSETS = "/docs-assets"
DOCS_PACKAGE = ("fastapi_offline", "static")
# uvicorn's settings for `tastyrec serve` (uvicorn 0.54). Not set: limit_concurrency. It counts idle
# and half-sent connections too, so N slow clients (fewer than it takes to use up the file
# descriptors) would get everyone a 503; the work itself is bounded by Limits.engine_concurrency,
# bodies by size and time (RequestGuard), connections by the reverse proxy (docs/serving.md, "Security").
SERVER_SETTINGS: dict[str, Any] = {
    # h11 rather than httptools (uvicorn's choice when installed): httptools took 10 MB of request
    # headers into memory; h11 answers 400 to a request head still incomplete past 16 KiB (one that
    # arrives in a single socket read may be larger: at most 256 KiB on loopback)
    "http": "h11", "h11_max_incomplete_event_size": 16 * 2**10,
    "timeout_keep_alive": 5,  # an idle connection between two requests is closed after 5 s
    # Ctrl-C or `docker stop` (SIGTERM, SIGKILL 10 s later): requests in flight get 8 s to finish
    "timeout_graceful_shutdown": 8,
}
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


# ---- what reaches a route, and malformed requests: a 4xx with a message, never a 500 -----------
class RequestGuard:
    """A pure ASGI middleware: what can be refused before the body is read, is, and the body is
    bounded in size and time. In order:

    - without a token: a Host that is not a loopback name -> 403; a write (POST ...) a browser
      sends cross-site -> 403 (see the module's docstring);
    - with a token: its check on every route but the docs and their assets (401 / 403), so that
      the body of a request without it is never read, let alone parsed;
    - a Content-Length over the route's limit -> 413;
    - while the body streams in: 413 at the chunk that crosses the limit (a body without a
      Content-Length), 408 if it is not all there `body_seconds` after the request began.

    Refusals before the body and the 408 close the connection: the rest of the body is not read.
    """

    def __init__(self, app: ASGIApp, token: str | None, limits: Limits, public: set[str],
                 public_under: tuple[str, ...] = ()):
        self.app, self.token, self.limits, self.public = app, token, limits, public
        self.public_under = public_under  # folders whose every path is public (the docs' assets)
        self.body_bytes = {"/recommendations": limits.recommendations_bytes, "/score": limits.score_bytes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            max_bytes = self.admit(scope["method"], scope["path"], Headers(scope=scope))
        except HTTPException as e:
            headers = {**(e.headers or {}), "Connection": "close"}
            await JSONResponse({"detail": e.detail}, e.status_code, headers=headers)(scope, receive, send)
            return
        await self.app(scope, self.bounded(receive, max_bytes), send)

    def admit(self, method: str, path: str, headers: Headers) -> int:
        """The body limit of the route; HTTPException for a request refused on its headers."""
        if not self.token:
            host = headers.get("host", "localhost")  # HTTP/1.0 may send none; browsers always do
            if not is_loopback(host_name(host)):
                raise HTTPException(403, f"Host {host!r} refused: without a token this service answers only "
                                         f"loopback names (localhost, 127.0.0.1, [::1]); set {TOKEN_ENV} to "
                                         "serve it under other names")
            if method not in ("GET", "HEAD", "OPTIONS") and cross_site(headers):
                raise HTTPException(403, f"cross-site {method} refused: without a token this service takes "
                                         f"writes from loopback pages only; set {TOKEN_ENV} to serve others")
        elif path not in self.public and not path.startswith(self.public_under):
            check_token(self.token, headers.get("authorization"))
        max_bytes = self.body_bytes.get(path, self.limits.body_bytes)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise HTTPException(413, f"request bodies to {path} are limited to {max_bytes:,} bytes "
                                     f"(Content-Length: {int(declared):,})")
        return max_bytes

    def bounded(self, receive: Receive, max_bytes: int) -> Receive:
        """`receive`, refusing a body over `max_bytes` or not all there in time; after the body,
        as it is (a response may wait for the client to disconnect)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_seconds
        received, done = 0, False

        async def guarded() -> Message:
            nonlocal received, done
            if done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:  # FastAPI re-raises an HTTPException met reading the body
                raise HTTPException(408, f"the request body did not arrive within {self.limits.body_seconds:g} s",
                                    headers={"Connection": "close"}) from None
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise HTTPException(413, f"request bodies are limited to {max_bytes:,} bytes")
            done = not message.get("more_body", False)
            return message

        return guarded


def host_name(host: str) -> str:
    """A Host header's name without its port: "[::1]:8000" -> "::1", "localhost:8000" -> "localhost"."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.partition(":")[0]


def cross_site(headers: Headers) -> bool:
    """A browser's request sent by a page of another site: Sec-Fetch-Site says so, or its Origin is
    not a loopback one ("null" included: sandboxed frames and file:// pages send it)."""
    if headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = headers.get("origin")
    if origin is None:  # not a browser's cross-origin request (browsers send Origin with every POST)
        return False
    try:
        return not is_loopback(urlsplit(origin).hostname or "")
    except ValueError:  # an Origin that is no URL ("http://[x")
        return True


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


def brief_errors(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI's validation errors, at most ECHO_ERRORS of them (then one that counts the rest),
    each echoed `input` longer than ECHO_CHARS characters of JSON cut to them (as a string)."""
    shown = [e | {"input": brief(e["input"])} if "input" in e else e for e in errors[:ECHO_ERRORS]]
    if len(errors) > ECHO_ERRORS:
        shown.append({"type": "more_errors", "loc": [], "msg": f"{len(errors) - ECHO_ERRORS:,} more errors not listed"})
    return shown


def brief(value: Any) -> Any:
    """`value`, or the first ECHO_CHARS characters of its JSON when it is longer."""
    try:
        text = json.dumps(value, default=str)  # writes NaN too: only the length counts here
    except (TypeError, ValueError):
        text = repr(value)
    return value if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}... ({len(text):,} characters)"


# ---- auth and the engine, as dependencies ------------------------------------------------------
bearer = HTTPBearer(auto_error=False, description=f"required when {TOKEN_ENV} is set")


def validate_token(token: str) -> None:
    """ValueError for a token no request could match, or one too short (MIN_TOKEN_CHARS) to guard
    anything. Header values are ASCII in practice (httpx refuses to send others, servers read them
    as Latin-1) and HTTPBearer strips the value it reads: other tokens answer every request 403."""
    advice = "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
    if token != token.strip():
        raise ValueError(f"{TOKEN_ENV} has whitespace around it: no client's token would match it; remove it")
    if not (token.isascii() and token.isprintable()):
        raise ValueError(f"{TOKEN_ENV} has characters other than printable ASCII, which an HTTP header "
                         f"cannot carry reliably: use letters, digits and punctuation, {advice}")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{TOKEN_ENV} has {len(token)} characters: use at least {MIN_TOKEN_CHARS}, {advice}")


def check_token(expected: str | None, authorization: str | None) -> None:
    """401 without a bearer token, 403 with a wrong one; nothing to check when no token is set.
    `authorization`: the Authorization header, read as FastAPI's HTTPBearer reads it."""
    if not expected:
        return
    scheme, credentials = get_authorization_scheme_param(authorization)
    if scheme.lower() != "bearer" or not credentials:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.encode(), expected.encode()):
        raise HTTPException(403, "wrong bearer token")


# `async def`: cheap checks that need no thread of the pool.
async def require_token(request: Request,
                        _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """The check RequestGuard made before the body, again for each route (`bearer` puts the scheme
    in the OpenAPI schema, for /docs' "Authorize")."""
    check_token(request.app.state.token, request.headers.get("authorization"))


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
    """The model version and features run this worker serves; 503 with the reason when it cannot
    answer requests now (one online lookup is tried), so a health check takes it out of rotation."""
    engine.check()  # OnlineStoreError / RedisError: 503 from their handlers
    info = engine.model_info
    return {"status": "ok", "model": info["name"], "version": info["version"], "alias": info["alias"],
            "kind": info["kind"], "loaded_at": info["loaded_at"], "device": str(engine.predictor.device),
            "features": info["features"], "scores": engine.scores}


@router.post("/recommendations", response_model=RecommendResponse, tags=["recommendations"],
             responses={404: {"description": "none of the customer ids is known (some known: 200, the others "
                                             "in unknown_customers)"},
                        413: {"description": "too many ids"},
                        422: {"description": "a malformed body, or a filter value that looks like a typo of a "
                                             "known one (named in the message)"}})
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
    if result.unknown_customers and not result.selected:  # some known: answered, the others listed
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
    """Open again, in every worker, all the engine read at start: the version the reference names
    now (a new champion), the current features run (after `tastyrec features`) and the customer
    directory (after `setup`); requests in flight finish on what they started with."""
    try:
        engine.reload()
    except RecommendError as e:
        raise HTTPException(409, f"{e}; still serving version {engine.model_info['version']}") from None
    if request.app.state.reload_signal is not None:
        request.app.state.reload_signal.send()
    return health(engine)


# ---- the docs: public, and their assets served here ----------------------------------------------
# FastAPI's own /docs and /redoc pages load their scripts from a CDN, and ReDoc's its fonts from
# Google: these are the same pages (its functions) with the files of DOCS_ASSETS. The pages also
# tell the browser to load nothing from elsewhere: ReDoc's sidebar shows an image from its maker's
# CDN that no option turns off, and Swagger UI's validator badge (off here) would call a public
# validator. Inline scripts and styles: FastAPI's pages start the UIs inline, and both UIs style
# inline; ReDoc's search runs in a worker made from a blob.
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:")
docs_router = APIRouter(include_in_schema=False)


def docs_urls(request: Request) -> tuple[str, str]:
    """(the OpenAPI schema's URL, the assets' folder URL), behind the proxy's root path if any."""
    root = request.scope.get("root_path", "").rstrip("/")
    return root + request.app.openapi_url, root + DOCS_ASSETS


@docs_router.get(DOCS_URL)
async def swagger_ui(request: Request) -> HTMLResponse:
    openapi, assets = docs_urls(request)
    page = get_swagger_ui_html(openapi_url=openapi, title=f"{request.app.title} - Swagger UI",
                               swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                               swagger_css_url=f"{assets}/swagger-ui.css", swagger_favicon_url=f"{assets}/favicon.png",
                               swagger_ui_parameters={"validatorUrl": None})
    page.headers["Content-Security-Policy"] = DOCS_POLICY
    return page


@docs_router.get(REDOC_URL)
async def redoc(request: Request) -> HTMLResponse:
    openapi, assets = docs_urls(request)
    page = get_redoc_html(openapi_url=openapi, title=f"{request.app.title} - ReDoc",
                          redoc_js_url=f"{assets}/redoc.standalone.js", redoc_favicon_url=f"{assets}/favicon.png",
                          with_google_fonts=False)
    page.headers["Content-Security-Policy"] = DOCS_POLICY
    return page


# ---- the app ------------------------------------------------------------------------------------
def create_app(ws: Workspace, ref: str | int = "champion", token: str | None = None,
               engine: Engine | None = None, limits: Limits = LIMITS, reload_stamp: Path | None = None) -> FastAPI:
    """The service for workspace `ws`, serving the version `ref` names (re-resolved on reload).

    `token`: the bearer token every route requires (None or empty: none; ValueError for one that
    `validate_token` refuses). `engine`: an Engine already open (the single-worker `tastyrec serve`
    opens it to report errors before listening); otherwise the lifespan opens one. `limits`: what
    one request may ask for. `reload_stamp`: the file several worker processes share to reload
    together (see ReloadSignal).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # the stamp is read before the model loads: a reload sent while this worker is still
        # loading (the old champion) makes it reload before its first request, never missed
        signal = ReloadSignal(reload_stamp) if reload_stamp else None
        app.state.engine = engine or Engine(ws, ref, precompute=True)
        app.state.reload_signal = signal
        yield
        app.state.engine.close()  # no scoring thread left running while the interpreter exits
        app.state.engine = None

    if token:
        validate_token(token)
    app = FastAPI(title="tastyrec", lifespan=lifespan, docs_url=None, redoc_url=None,  # docs_router's instead
                  description="Menu-item recommendations for Tasty Bytes loyalty customers (tastyrec-dlrm).")
    app.state.token = token or None
    app.state.limits = limits
    app.state.engine_slots = threading.BoundedSemaphore(limits.engine_concurrency)
    app.include_router(router)
    app.include_router(docs_router)
    app.mount(DOCS_ASSETS, StaticFiles(packages=[DOCS_PACKAGE]), name="docs-assets")
    app.add_middleware(RequestGuard, token=token or None, limits=limits, public={DOCS_URL, REDOC_URL, app.openapi_url},
                       public_under=(DOCS_ASSETS + "/",))

    @app.exception_handler(RequestValidationError)
    async def malformed_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's own 422, naming the field; the input it echoes is cut short (brief_errors) and
        made JSON-safe, or a NaN in the body would fail to encode here, a 500."""
        return JSONResponse({"detail": json_safe(jsonable_encoder(brief_errors(exc.errors())))}, status_code=422)

    @app.exception_handler(RedisError)
    async def online_store_down(request: Request, exc: RedisError) -> JSONResponse:
        """A Redis online store that stops answering mid-service: 503, the model keeps loaded."""
        return JSONResponse({"detail": f"the online store (Redis) is unavailable: {exc}"}, status_code=503)

    @app.exception_handler(OnlineStoreError)
    async def online_store_unusable(request: Request, exc: OnlineStoreError) -> JSONResponse:
        """An online store that cannot be read (missing, locked, features Feast will not serve):
        503 with the reason; the service recovers by itself or after `features` + /admin/reload."""
        return JSONResponse({"detail": str(exc)}, status_code=503)

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
