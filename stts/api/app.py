"""FastAPI application factory: ``create_app(settings)``, the HTTP face alone.

The faces beside it (the web page's routes, the Wyoming server on the same event loop)
are handed in by the composition root, :func:`stts.server.build_app`: this module
imports neither.

This is the one place errors become HTTP responses: every :class:`stts.errors.SttsError`
maps to its own status code and the body ``{"error": {"message", "type", "code"}}``
(OpenAI's error shape), with ``Retry-After`` where the error has one. Anything else
is logged with its traceback and answered with a generic 500: no stack trace or
internal path ever reaches a client.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stts import __version__
from stts.api import docs, legacy, ops, realtime
from stts.api import jobs as jobs_routes
from stts.api import openai as openai_routes
from stts.api.drain import DrainGuard, GracefulStop
from stts.api.edge import Guard, RequestContext, cors_options, load_api_keys
from stts.api.responses import error_response, plain_error
from stts.config import Settings
from stts.errors import AudioTooLarge, RequestTimeout, SttsError
from stts.jobs import JobsCollector, JobService
from stts.metrics import Metrics
from stts.service import EngineManager

logger = logging.getLogger(__name__)

# Room for multipart boundaries and the small form fields that travel with the file.
_FORM_OVERHEAD_BYTES = 256 * 1024
# After the grace period, how long engine workers get to reach their next segment.
_WORKER_EXIT_S = 1.0


class _BodyRefused(Exception):
    """Raised into the app when the body is over the limit or stalls."""


class BodySizeLimit:
    """Refuse request bodies over the limit while they stream in, never reading them whole.

    A Content-Length over the limit is refused before a single body byte is read; a
    chunked body is counted as it arrives and cut off at the limit. A body that stalls
    (no bytes for ``idle_timeout_s``) is answered 408 and its connection closed.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        stated_limit: int,
        idle_timeout_s: float,
        post_limits: dict[str, tuple[int, SttsError]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.stated_limit = stated_limit  # the configured limit, named in the message
        self.idle_timeout_s = idle_timeout_s
        # POST paths with limits of their own (max_bytes, the error answered over it): job
        # uploads, and /web/render's transcripts.
        self.post_limits = post_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.max_bytes
        too_large: SttsError = AudioTooLarge(
            f"the audio is larger than the limit of {self.stated_limit} bytes"
        )
        if scope["method"] == "POST" and scope["path"] in self.post_limits:
            max_bytes, too_large = self.post_limits[scope["path"]]
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > max_bytes:
                    await error_response(too_large)(scope, receive, send)
                    return
        received = 0
        failure: SttsError | None = None  # what the body did wrong, once it did
        response_started = False
        replaced = False
        body_done = False

        async def counting_receive() -> Message:
            nonlocal received, failure, body_done
            if body_done:  # only the disconnect is left to wait for: no time limit
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.idle_timeout_s)
            except asyncio.TimeoutError:
                failure = RequestTimeout(
                    f"no request body bytes arrived for {self.idle_timeout_s:g} s"
                )
                raise _BodyRefused() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    failure = too_large
                    raise _BodyRefused()
                body_done = not message.get("more_body", False)
            return message

        async def refuse() -> None:
            assert failure is not None
            response = error_response(failure)
            response.headers["Connection"] = "close"  # the rest of the body is not read
            await response(scope, receive, send)

        async def guarded_send(message: Message) -> None:
            # Frameworks may turn our exception into their own 400 ("error parsing the
            # body"); whatever they answer, the body's fault is what is answered.
            nonlocal response_started, replaced
            if message["type"] == "http.response.start":
                response_started = True
                if failure is not None:
                    replaced = True
                    await refuse()
                    return
            if not replaced:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyRefused:
            if not response_started:
                await refuse()


class Companion(Protocol):
    """A server that runs beside the HTTP app on its event loop, with its engine manager
    (Wyoming): started with the app, stopped within what is left of the grace period."""

    async def start(self) -> None: ...

    async def stop(self, timeout: float, /) -> None: ...


# Builds a companion from the app's engine manager and metrics.
CompanionFactory = Callable[[EngineManager, Metrics], Companion]


@dataclass(frozen=True)
class Routes:
    """More routes for the app (the web page), with the body limits of their POST paths:
    path prefix -> (bytes, the error for a larger body)."""

    router: APIRouter
    post_limits: dict[str, tuple[int, SttsError]] = field(default_factory=dict)


def create_app(
    settings: Settings | None = None,
    manager: EngineManager | None = None,
    *,
    routes: Sequence[Routes] = (),
    companions: Sequence[CompanionFactory] = (),
) -> FastAPI:
    """Build the ASGI app; it owns (and closes) its EngineManager unless one is given.
    ``routes`` and ``companions`` are the other faces served with it (see
    :func:`stts.server.build_app`)."""
    settings = settings or Settings.load()
    owns_manager = manager is None
    mgr = manager or EngineManager(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mgr.warn_unavailable()  # an enabled engine that can't run is said once, at start
        preload: asyncio.Future[None] | None = None
        if settings.preload:
            # Load in the background: /health answers at once, /ready flips when loaded.
            preload = asyncio.ensure_future(asyncio.to_thread(mgr.preload))
        for companion in started:
            await companion.start()
        stop.attach(asyncio.get_running_loop())
        await jobs.start()  # jobs a crash or a stop left behind resume
        try:
            yield
        finally:
            # Everything below shares what is left of the one grace period.
            stop.request()
            # Running jobs stop at their next segment and stay queued for the next start.
            await jobs.stop(stop.remaining())
            for companion in started:
                await companion.stop(stop.remaining())
            if preload is not None and not preload.done():
                await asyncio.wait({preload}, timeout=stop.remaining())
            stop.abort()
            if owns_manager:
                # Engine jobs were told to stop; a window already under way may not be
                # interruptible, so wait only a moment for it before giving up on it.
                finished = await asyncio.to_thread(
                    mgr.close, timeout=stop.remaining() + _WORKER_EXIT_S
                )
                app.state.workers_left = not finished

    app = FastAPI(
        title="stts",
        version=__version__,
        summary="Offline speech-to-text: OpenAI-compatible and legacy APIs over several engines",
        lifespan=lifespan,
        # /docs and /redoc come from stts.api.docs, assets included: no CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.manager = mgr
    app.state.settings = settings
    # `stts serve` calls app.state.stop.request() on SIGTERM: new requests get 503, and
    # what is still under way when shutdown_grace_s has passed is stopped and answered.
    app.state.stop = stop = GracefulStop(mgr, settings.shutdown_grace_s, owns_manager=owns_manager)
    app.state.workers_left = False  # set when engine workers outlived the graceful stop
    app.state.metrics = metrics = Metrics(mgr)
    app.state.jobs = jobs = JobService(settings, mgr, stopping=lambda: stop.draining)
    metrics.registry.register(JobsCollector(jobs))
    # Same event loop, same manager: one loaded model serves every protocol.
    app.state.companions = started = [make(mgr, metrics) for make in companions]

    @app.exception_handler(SttsError)
    async def _stts_error(request: Request, exc: SttsError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Field names and plain reasons only: never the input, never Python internals
        # (pydantic's messages may quote types, e.g. "received: <class 'str'>").
        problems = []
        params: list[str] = []
        for err in exc.errors()[:5]:
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            names = [p for p in loc if p not in ("query", "header", "path", "cookie")]
            if names and not names[0].isdigit():
                params.append(names[0].removesuffix("[]"))
            msg = str(err.get("msg", "invalid"))
            if "<class" in msg or "Traceback" in msg:
                msg = "must be a file upload" if "UploadFile" in msg else "has the wrong type"
            problems.append(f"{'.'.join(loc)[:64]}: {msg[:200]}")
        message = "invalid request: " + "; ".join(problems)
        return plain_error(
            400, message, "invalid_request_error", "invalid_request", params[0] if params else None
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = plain_error(exc.status_code, str(exc.detail), "invalid_request_error", code)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return plain_error(500, "internal server error", "server_error", "internal_error")

    app.include_router(openai_routes.router)
    app.include_router(legacy.router)
    app.include_router(ops.router)
    app.include_router(docs.router)
    app.include_router(realtime.router)
    app.include_router(jobs_routes.router)
    post_limits: dict[str, tuple[int, SttsError]] = {
        jobs_routes.router.prefix: (
            settings.jobs.max_bytes + _FORM_OVERHEAD_BYTES,
            AudioTooLarge(f"the audio is larger than the limit of {settings.jobs.max_bytes} bytes"),
        )
    }
    for extra in routes:
        app.include_router(extra.router)
        post_limits.update(extra.post_limits)
    # Added innermost first: CORS -> RequestContext -> Guard -> DrainGuard -> BodySizeLimit
    # -> routes.
    # CORS outermost: preflights need no key and every answer (401, 429, 413, the draining
    # 503) carries its headers. Keys are read here so a bad key setting fails create_app.
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.audio.max_bytes + _FORM_OVERHEAD_BYTES,
        stated_limit=settings.audio.max_bytes,
        idle_timeout_s=settings.body_timeout_s,
        post_limits=post_limits,
    )
    app.add_middleware(DrainGuard, stop=stop)
    app.add_middleware(Guard, settings=settings, keys=load_api_keys(settings))
    app.add_middleware(RequestContext, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, **cors_options(settings))
    return app


def server_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """How `stts serve` (and the tests) run the app under uvicorn."""
    from stts.logs import logging_config

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": logging_config(settings.log_level, settings.json_logs),
        # A backstop only: GracefulStop answers and stops requests at shutdown_grace_s.
        "timeout_graceful_shutdown": math.ceil(settings.shutdown_grace_s) + 1,
        "access_log": False,  # stts.access logs each request, with its id
        # X-Forwarded-For is honoured only from settings.trusted_proxies (stts.api.edge);
        # uvicorn's own handling would trust 127.0.0.1 behind our back.
        "proxy_headers": False,
        "server_header": False,
        # The realtime WebSocket takes appends of up to 15 MiB of audio (OpenAI's limit).
        "ws_max_size": realtime.MAX_MESSAGE_BYTES,
        # The protocol stack the hostile-client tests were run against, whatever else is
        # installed: uvicorn takes uvloop and httptools when present (ray[serve] brings
        # them), and their parsers answer malformed requests differently.
        "loop": "asyncio",
        "http": "h11",
        "ws": "websockets-sansio",  # what "auto" chose; "websockets" is the legacy one
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def app_factory() -> Any:
    """For ``uvicorn --factory stts.api.app:app_factory``."""
    return create_app()
