"""OpenAI Realtime transcription over WebSocket: ``GET /v1/realtime?intent=transcription``.

One session is one WebSocket. The client appends audio (base64 in JSON events, the
session's format); each utterance becomes an *item* transcribed while it is spoken by
a :class:`~stts.streams.LiveStream`:

- with server VAD (the default) a :class:`~stts.vad.VadStream` finds where speech
  starts and stops; an item opens at the start (with ``prefix_padding_ms`` of the audio
  before it) and is committed after ``silence_duration_ms`` of silence;
- with ``turn_detection: null`` the first append opens an item and the client's
  ``input_audio_buffer.commit`` ends it (``clear`` drops it).

Deltas carry only committed words (they never change), while the item is still being
spoken; ``completed`` carries exactly their concatenation. Tentative text, which may
still change, goes only to clients that put ``"stts.tentative"`` in the session's
``include``. Items of a session run one after another on one stream place: the next
one's audio waits (bounded) while the previous one finishes.

Errors in a client's event (bad JSON, unknown type, bad base64, a too-large append, a
commit of less than 100 ms) are answered with an ``error`` event and the session goes
on. A failed item (its stream refused when the engine has all its streams open, or
audio arriving faster than it is transcribed) gets an ``error`` event, its stream is
closed and the rest of its audio ignored; the session goes on. A session longer than
``streaming.max_duration_s``, idle for ``streaming.idle_timeout_s``, or still open at
the graceful stop's deadline gets an ``error`` event and is closed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math

from fastapi import APIRouter, WebSocket
from starlette.types import Receive, Scope, Send

from stts.api.drain import GracefulStop
from stts.api.edge import deny
from stts.api.realtime_config import SessionConfig, check_model, invalid
from stts.api.realtime_item import ClientGone, error_body, new_id
from stts.api.realtime_session import MAX_MESSAGE_BYTES, RealtimeSession
from stts.errors import (
    InvalidRequest,
    Overloaded,
    RateLimited,
    ShuttingDown,
    SttsError,
    shorten,
)
from stts.metrics import Metrics
from stts.service import EngineManager, shutting_down

__all__ = ["MAX_MESSAGE_BYTES", "router"]

logger = logging.getLogger(__name__)

router = APIRouter()


def _close_code(error: SttsError) -> int:
    """The WebSocket close code that goes with an error that ends a session."""
    if isinstance(error, ShuttingDown):
        return 1012  # service restart
    if isinstance(error, Overloaded | RateLimited):
        return 1013  # try again later
    if isinstance(error, InvalidRequest):
        return 4000  # OpenAI's code for a request it cannot serve
    if error.status_code >= 500:
        return 1011
    return 1008  # a limit: too long, idle


@router.websocket("/v1/realtime")
async def realtime_transcription(websocket: WebSocket) -> None:
    """An OpenAI Realtime transcription session (``?intent=transcription``)."""
    app = websocket.app
    manager: EngineManager = app.state.manager
    metrics: Metrics = app.state.metrics
    stop: GracefulStop = app.state.stop
    offered = websocket.scope.get("subprotocols", [])
    beta = (
        websocket.headers.get("openai-beta", "").replace(" ", "").lower() == "realtime=v1"
        or "openai-beta.realtime-v1" in offered
    )
    # A browser that offered subprotocols fails the handshake unless one is chosen.
    subprotocol = next((p for p in ("realtime", "openai-beta.realtime-v1") if p in offered), None)
    problem: SttsError | None = None
    config: SessionConfig | None = None
    try:
        intent = websocket.query_params.get("intent")
        if intent not in (None, "transcription"):
            raise invalid(
                "intent",
                f"Invalid value: {shorten(intent)}. This server serves transcription sessions "
                "only: use ?intent=transcription.",
            )
        model = websocket.query_params.get("model")
        key = manager.resolve(None)
        model = model or f"{key[0]}:{key[1]}"
        config = SessionConfig(key=check_model(manager, model, "model"), model=model)
    except SttsError as exc:
        problem = exc
    if manager.draining:
        await _refuse(shutting_down(), websocket.scope, websocket.receive, websocket.send)
        return
    if config is not None and _full(manager, config):
        busy = Overloaded(
            f"engine {config.key[0]!r} has all the live streams it may have open; retry later",
            retry_after=1,
        )
        await _refuse(busy, websocket.scope, websocket.receive, websocket.send)
        return
    await websocket.accept(subprotocol=subprotocol)
    if problem is not None or config is None:
        assert problem is not None
        await _end(websocket, problem)
        return
    session = RealtimeSession(websocket, manager, metrics, config, "beta" if beta else "ga")
    metrics.realtime_sessions.inc()
    logger.info("realtime session %s opened (model %s)", session.id, config.model)
    result = "ok"
    try:
        result = await session.run(stop)
        if result == "ok":
            with contextlib.suppress(Exception):
                await websocket.close(1000)
    except ClientGone:
        result = "client_gone"
    except SttsError as exc:
        # Answered before the items are stopped: a decode step under way may hold its
        # stream for a while, and the graceful stop cuts off what has not ended soon.
        result = exc.code
        await _end(websocket, exc, session)
    except Exception:
        logger.exception("realtime session %s failed", session.id)
        result = "internal_error"
        await _end(websocket, SttsError("internal server error"), session)
    finally:
        await session.close()
        metrics.realtime_sessions.dec()
        metrics.realtime_closed.labels(result).inc()
        logger.info("realtime session %s closed: %s", session.id, result)


def _full(manager: EngineManager, config: SessionConfig) -> bool:
    """Whether the session's engine has every stream place taken right now."""
    for slot in manager.loaded_slots():
        if (slot.name, slot.model) == config.key:
            return slot.open_streams >= slot.max_streams
    return False


async def _refuse(error: SttsError, scope: Scope, receive: Receive, send: Send) -> None:
    headers = (
        {"Retry-After": str(max(1, math.ceil(error.retry_after)))} if error.retry_after else None
    )
    await deny(error, scope, receive, send, headers)


async def _end(
    websocket: WebSocket, error: SttsError, session: RealtimeSession | None = None
) -> None:
    """An ``error`` event, then the close that goes with it (if the client is still there)."""
    try:
        if session is not None:
            await session.send_error(error)
        else:
            event = {"type": "error", "event_id": new_id("event"), "error": error_body(error)}
            await websocket.send_text(json.dumps(event))
        reason = f"{error.error_type}.{error.code}"[:120]
        await websocket.close(_close_code(error), reason)
    except Exception:
        pass  # the client left first
