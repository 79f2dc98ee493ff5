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

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import time
import uuid
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket
from starlette.types import Receive, Scope, Send

from stts.api.drain import GracefulStop
from stts.api.edge import deny
from stts.api.realtime_config import (
    TENTATIVE_EVENT,
    ClientError,
    Dialect,
    SessionConfig,
    apply_update,
    check_model,
    invalid,
)
from stts.audio import SAMPLE_RATE, AudioArray
from stts.engines.streaming import StreamUpdate
from stts.errors import (
    AudioTooLarge,
    AudioTooLong,
    InvalidRequest,
    Overloaded,
    RateLimited,
    RequestTimeout,
    ShuttingDown,
    SttsError,
    shorten,
)
from stts.metrics import Metrics
from stts.pcm import PcmConverter
from stts.service import EngineManager, shutting_down
from stts.streams import LiveStream
from stts.vad import SileroVad, VadStream

logger = logging.getLogger(__name__)

router = APIRouter()

MAX_APPEND_BYTES = 15 * 1024 * 1024
"""Largest audio one ``input_audio_buffer.append`` may carry (decoded), as OpenAI's."""
_MAX_APPEND_BASE64 = 4 * math.ceil(MAX_APPEND_BYTES / 3)
MAX_MESSAGE_BYTES = _MAX_APPEND_BASE64 + 64 * 1024
"""Largest WebSocket message (uvicorn's ``ws_max_size``): the largest append, in JSON."""
MIN_COMMIT_S = 0.1
_HISTORY_S = 1.0  # audio kept beyond prefix_padding_ms, for a speech start found late

_SUPPORTED = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "session.close",
)
_CONVERSATION_ONLY = frozenset(
    {
        "session.input_audio_buffer.append",
        "conversation.item.create",
        "conversation.item.truncate",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "response.create",
        "response.cancel",
    }
)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:21]}"


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


class _ClientGone(Exception):
    """The client left; nothing more can be sent."""


class _Item:
    """One utterance of a session: its stream, and what was sent about it."""

    def __init__(self, session: _Session, audio_start: int) -> None:
        self.session = session
        self.id = _new_id("item")
        self.config = session.config
        self.audio_start = audio_start  # session position, 16 kHz samples
        self.started = time.monotonic()
        self.ended: float | None = None
        self.stream: LiveStream | None = None
        self.pending: list[AudioArray] = []
        self.pending_samples = 0
        self.samples = 0
        self.dropped = False
        self.committed = False
        self.sent: list[str] = []
        self.tentative = ""
        self.shown = False
        self.finish = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def push(self, samples: AudioArray) -> None:
        """Hand audio to the stream (or keep it until the stream opens); SttsError when
        the stream refuses it (backlog, length)."""
        if self.dropped or not len(samples):
            return
        self.samples += len(samples)
        if self.stream is not None:
            self.stream.push(samples)
            return
        self.pending.append(samples)
        self.pending_samples += len(samples)
        limit = self.session.settings.streaming.max_backlog_s
        if self.pending_samples > limit * SAMPLE_RATE:
            raise Overloaded(
                "audio arrives faster than it can be transcribed: more than "
                f"{limit:g} s are waiting",
                retry_after=1,
            )

    async def run(self, previous: asyncio.Task[None] | None) -> None:
        """Open the stream (after the previous item's), send deltas as words are
        committed, and on commit the last ones and ``completed``."""
        session = self.session
        try:
            if previous is not None:
                await asyncio.wait({previous})
            if self.dropped:
                return
            self.stream = await LiveStream.open(
                session.manager, self.config.key, self.config.options
            )
            pending, self.pending, self.pending_samples = self.pending, [], 0
            for chunk in pending:
                self.stream.push(chunk)
            await self._follow(self.stream)
        except _ClientGone:
            pass
        except SttsError as exc:
            await self._fail(exc)
        except Exception:
            logger.exception("realtime item %s failed", self.id)
            await self._fail(SttsError("the transcription failed"))
        finally:
            if self.stream is not None:
                seconds = self.stream.received / SAMPLE_RATE
                session.metrics.stream_audio_seconds.labels(self.config.key[0]).inc(seconds)
                await self.stream.close()

    async def _follow(self, stream: LiveStream) -> None:
        updates = stream.updates().__aiter__()
        next_update: asyncio.Future[StreamUpdate] | None = None
        try:
            while True:
                if next_update is None:
                    next_update = asyncio.ensure_future(updates.__anext__())
                finishing: asyncio.Future[Any] = asyncio.ensure_future(self.finish.wait())
                waiting: set[asyncio.Future[Any]] = {next_update, finishing}
                try:
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    finishing.cancel()
                if not next_update.done():
                    break  # committed: finish below
                try:
                    update = next_update.result()
                except StopAsyncIteration:
                    return  # closed
                next_update = None
                await self._emit(update)
        finally:
            if next_update is not None and not next_update.done():
                # Queue.get gives up cleanly: what it was waiting for stays queued.
                next_update.cancel()
                await asyncio.wait({next_update})
        last, transcript = await stream.finish()
        for update in stream.drain_updates():
            await self._emit(update)
        await self._emit(last)
        text = "".join(self.sent)
        if text.strip() != transcript.text.strip():
            logger.warning("realtime item %s: deltas and transcript differ", self.id)
        await session_send(
            self.session,
            "conversation.item.input_audio_transcription.completed",
            item_id=self.id,
            content_index=0,
            transcript=text,
            usage={"type": "duration", "seconds": round(self.samples / SAMPLE_RATE, 3)},
        )
        if self.ended is not None:
            self.session.metrics.stream_final_latency.labels(self.config.key[0]).observe(
                time.monotonic() - self.ended
            )

    async def _emit(self, update: StreamUpdate) -> None:
        text = update.text if self.sent else update.text.lstrip()
        if (text or update.tentative) and not self.shown:
            self.shown = True
            self.session.metrics.stream_partial_latency.labels(self.config.key[0]).observe(
                time.monotonic() - self.started
            )
        if text:
            self.sent.append(text)
            await session_send(
                self.session,
                "conversation.item.input_audio_transcription.delta",
                item_id=self.id,
                content_index=0,
                delta=text,
            )
        if self.session.config.tentative and update.tentative != self.tentative:
            self.tentative = update.tentative
            await session_send(
                self.session, TENTATIVE_EVENT, item_id=self.id, content_index=0, text=self.tentative
            )

    async def _fail(self, error: SttsError) -> None:
        """The item cannot go on: its stream is closed, the rest of its audio ignored."""
        self.dropped = True
        if isinstance(error, ShuttingDown):
            self.session.fatal = error
        with contextlib.suppress(_ClientGone):
            if self.committed:
                await session_send(
                    self.session,
                    "conversation.item.input_audio_transcription.failed",
                    item_id=self.id,
                    content_index=0,
                    error=_error_body(error),
                )
            else:
                await self.session.send_error(error)

    async def drop(self) -> None:
        """Stop this item now (cleared, or the session ends)."""
        self.dropped = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task})


def _error_body(error: SttsError, client_event_id: str | None = None) -> dict[str, Any]:
    return {
        "type": error.error_type,
        "code": error.code,
        "message": error.message,
        "param": error.param,
        "event_id": client_event_id,
    }


async def session_send(target: _Session, kind: str, /, **fields: Any) -> None:
    """Send one server event (every event has ``type`` and its own ``event_id``)."""
    await target.send({"type": kind, "event_id": _new_id("event"), **fields})


class _Session:
    """One WebSocket: its settings, audio conversion, VAD and items."""

    def __init__(
        self,
        websocket: WebSocket,
        manager: EngineManager,
        metrics: Metrics,
        config: SessionConfig,
        dialect: Dialect,
    ) -> None:
        self.websocket = websocket
        self.manager = manager
        self.settings = manager.settings
        self.metrics = metrics
        self.config = config
        self.dialect: Dialect = dialect
        self.id = _new_id("sess")
        self.expires_at = int(time.time() + self.settings.streaming.max_duration_s)
        self.max_samples = int(self.settings.streaming.max_duration_s * SAMPLE_RATE)
        self.send_lock = asyncio.Lock()
        self.gone = False
        self.fatal: SttsError | None = None  # set by an item: the session must end
        self.converter = PcmConverter(config.encoding, config.rate)
        self.vad: VadStream | None = None
        self.vad_origin = 0  # session position of the VAD stream's sample 0
        self.position = 0  # 16 kHz samples received
        self.fed = 0  # samples before this were handed to an item (or passed over)
        self.history = np.zeros(0, np.float32)
        self.history_start = 0
        self.item: _Item | None = None  # the item audio goes to
        self.items: list[_Item] = []  # items not yet done
        self.previous_item_id: str | None = None

    # -- sending --------------------------------------------------------------

    async def send(self, event: dict[str, Any]) -> None:
        """Send one event; _ClientGone once the client has left."""
        text = json.dumps(event, ensure_ascii=False)
        async with self.send_lock:
            if self.gone:
                raise _ClientGone()
            try:
                await self.websocket.send_text(text)
            except Exception as exc:
                self.gone = True
                raise _ClientGone() from exc

    async def send_error(self, error: SttsError, client_event_id: str | None = None) -> None:
        """An ``error`` event."""
        await session_send(self, "error", error=_error_body(error, client_event_id))

    async def send_session(self, created: bool) -> None:
        """``session.created``/``.updated`` (beta: ``transcription_session.*``)."""
        prefix = "transcription_session" if self.dialect == "beta" else "session"
        await session_send(
            self,
            f"{prefix}.{'created' if created else 'updated'}",
            session=self.config.as_dict(self.dialect, self.id, self.expires_at),
        )

    # -- the session ------------------------------------------------------------

    async def run(self, stop: GracefulStop) -> str:
        """Serve the session until the client leaves or it must end; the result for the
        metrics (``ok``, ``client_gone``); SttsError for an error that ends it."""
        await self._start_vad()
        await self.send_session(created=True)
        idle_s = self.settings.streaming.idle_timeout_s
        aborted = asyncio.ensure_future(stop.wait_aborted())
        receive: asyncio.Future[Any] | None = None
        try:
            while True:
                if self.fatal is not None:
                    raise self.fatal
                if receive is None:
                    receive = asyncio.ensure_future(self.websocket.receive())
                done, _ = await asyncio.wait(
                    {receive, aborted}, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED
                )
                if aborted in done:
                    raise shutting_down("the server is shutting down; the session is closed")
                if not done:
                    if any(i.finish.is_set() and i.task and not i.task.done() for i in self.items):
                        continue  # still finishing a committed item: the client waits for us
                    raise RequestTimeout(f"no event for {idle_s:g} s; the session is closed")
                message = receive.result()
                receive = None
                if message["type"] == "websocket.disconnect":
                    return "client_gone"
                if not await self._handle(message):
                    return "ok"
        finally:
            aborted.cancel()
            if receive is not None:
                receive.cancel()

    async def close(self) -> None:
        """Stop every item and give its stream place back."""
        self.items, items = [], self.items
        for item in items:
            await item.drop()

    async def _handle(self, message: dict[str, Any]) -> bool:
        """Handle one client message; False when the client asked to close."""
        event_id = None
        try:
            event = self._parse(message)
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            kind = event["type"]
            if kind == "input_audio_buffer.append":
                await self._append(event)
            elif kind in ("session.update", "transcription_session.update"):
                await self._update(event, beta=kind == "transcription_session.update")
            elif kind == "input_audio_buffer.commit":
                await self._commit_request()
            elif kind == "input_audio_buffer.clear":
                await self._clear()
            elif kind == "session.close":
                return False
            elif kind in _CONVERSATION_ONLY:
                raise invalid("type", f"'{kind}' is not supported on a transcription session.")
            else:
                raise invalid(
                    "type",
                    f"Invalid value: {shorten(str(kind))}. Supported values are: "
                    + ", ".join(f"'{k}'" for k in _SUPPORTED)
                    + ".",
                )
        except ClientError as exc:
            await self.send_error(exc, event_id)
        except (AudioTooLarge, InvalidRequest) as exc:
            await self.send_error(exc, event_id)
        return True

    @staticmethod
    def _parse(message: dict[str, Any]) -> dict[str, Any]:
        text = message.get("text")
        if text is None:
            raise ClientError(
                "invalid_event",
                "Expected a text WebSocket message; binary frames are not supported.",
            )
        try:
            event = json.loads(text)
        except ValueError:
            raise ClientError(
                "invalid_json", "Invalid event: failed to parse JSON value."
            ) from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ClientError(
                "invalid_event", "Invalid event: expected a JSON object with a 'type'."
            )
        return event

    # -- settings ---------------------------------------------------------------

    async def _update(self, event: dict[str, Any], *, beta: bool) -> None:
        config = apply_update(self.manager, self.config, event.get("session"), beta=beta)
        if beta:
            self.dialect = "beta"
        old, self.config = self.config, config
        if (config.encoding, config.rate) != (old.encoding, old.rate):
            if self.item is not None:
                await self._feed(self.converter.flush())
            self.converter = PcmConverter(config.encoding, config.rate)
        if config.turn_detection != old.turn_detection:
            if self.item is not None:  # an item open under the old rules ends here
                await self._commit(self.item, announce_stop=False)
            await self._start_vad()
        await self.send_session(created=False)

    async def _start_vad(self) -> None:
        turn = self.config.turn_detection
        self.vad = None
        if turn is None:
            return
        try:
            model = await asyncio.to_thread(SileroVad.shared)
        except SttsError as exc:
            # No VAD model here: manual commits only, and the session says so.
            logger.warning("server VAD unavailable: %s", exc.message)
            self.config = replace(self.config, turn_detection=None)
            return
        self.vad = VadStream(
            model, threshold=turn.threshold, silence_duration_ms=turn.silence_duration_ms
        )
        self.vad_origin = self.position

    # -- audio ------------------------------------------------------------------

    async def _append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise invalid("audio", "Invalid type for 'audio': expected a base64 string.")
        if len(audio) > _MAX_APPEND_BASE64:  # refused before decoding anything
            raise AudioTooLarge(
                f"an append carries at most {MAX_APPEND_BYTES} bytes of audio", param="audio"
            )
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise invalid("audio", "Invalid 'audio': expected base64-encoded audio.") from None
        samples = self.converter.convert(data)
        if self.position + len(samples) > self.max_samples:
            raise AudioTooLong(
                "the session is longer than the limit of "
                f"{self.settings.streaming.max_duration_s:g} s of audio"
            )
        await self._feed(samples)

    async def _feed(self, samples: AudioArray) -> None:
        """Audio for the current item (manual), or for the VAD to cut into items."""
        if not len(samples):
            return
        start = self.position
        self.position += len(samples)
        if self.vad is None:
            if self.item is None:
                self.item = self._open_item(start)
            await self._push(self.item, samples)
            self.fed = self.position
            return
        self.history = np.concatenate([self.history, samples])
        events = await asyncio.to_thread(self.vad.accept, samples)
        turn = self.config.turn_detection
        prefix = int((turn.prefix_padding_ms if turn else 0) * SAMPLE_RATE / 1000)
        for i, event in enumerate(events):
            at = self.vad_origin + event.sample
            if event.kind == "start" and self.item is None:
                begin = max(self.history_start, at - prefix, self.fed)
                self.fed = begin
                self.item = self._open_item(begin)
                await session_send(
                    self,
                    "input_audio_buffer.speech_started",
                    audio_start_ms=begin * 1000 // SAMPLE_RATE,
                    item_id=self.item.id,
                )
            elif event.kind == "stop" and self.item is not None:
                # The item takes the audio up to where the stop was found (its silence
                # included), or up to the next item's prefix if that starts in this piece.
                later = next((e for e in events[i + 1 :] if e.kind == "start"), None)
                end = self.position
                if later is not None:
                    end = min(end, max(at, self.vad_origin + later.sample - prefix))
                await self._push(self.item, self._history(self.fed, max(end, self.fed)))
                self.fed = max(end, self.fed)
                await self._commit(self.item, announce_stop=True)
        if self.item is not None:
            await self._push(self.item, self._history(self.fed, self.position))
            self.fed = self.position
        keep = prefix + int(_HISTORY_S * SAMPLE_RATE)
        if len(self.history) > keep:
            self.history = self.history[-keep:].copy()
            self.history_start = self.position - keep

    def _history(self, begin: int, end: int) -> AudioArray:
        return self.history[begin - self.history_start : end - self.history_start]

    def _open_item(self, audio_start: int) -> _Item:
        item = _Item(self, audio_start)
        previous = self.items[-1].task if self.items else None
        item.task = asyncio.ensure_future(item.run(previous))
        self.items = [i for i in self.items if i.task and not i.task.done()]
        self.items.append(item)
        return item

    async def _push(self, item: _Item, samples: AudioArray) -> None:
        try:
            item.push(samples)
        except SttsError as exc:
            # The item is dropped (its task closes its stream); the session goes on.
            await item.drop()
            await self.send_error(exc)

    async def _commit_request(self) -> None:
        item = self.item
        have = 0.0 if item is None or item.dropped else item.samples / SAMPLE_RATE
        if item is None or item.dropped or have < MIN_COMMIT_S:
            raise ClientError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {have * 1000:.2f}ms of audio.",
            )
        await self._commit(item, announce_stop=False)

    async def _commit(self, item: _Item, *, announce_stop: bool) -> None:
        """The item's audio is complete: say so, then let its task finish it."""
        self.item = None
        if self.vad is None:  # manual: the resampler's last few ms belong to this item
            tail = self.converter.flush()
            self.position += len(tail)
            await self._push(item, tail)
            self.fed = self.position
        if announce_stop:
            await session_send(
                self,
                "input_audio_buffer.speech_stopped",
                audio_end_ms=self.fed * 1000 // SAMPLE_RATE,
                item_id=item.id,
            )
        if item.dropped or item.samples < MIN_COMMIT_S * SAMPLE_RATE:
            await item.drop()  # nothing worth committing (or it failed already)
            return
        item.committed = True
        item.ended = time.monotonic()
        await session_send(
            self,
            "input_audio_buffer.committed",
            previous_item_id=self.previous_item_id,
            item_id=item.id,
        )
        body = {
            "id": item.id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        if self.dialect == "beta":
            await session_send(
                self, "conversation.item.created", previous_item_id=self.previous_item_id, item=body
            )
        else:
            for kind in ("conversation.item.added", "conversation.item.done"):
                await session_send(self, kind, previous_item_id=self.previous_item_id, item=body)
        self.previous_item_id = item.id
        item.finish.set()

    async def _clear(self) -> None:
        item, self.item = self.item, None
        if item is not None:
            await item.drop()
        self.converter.flush()
        if self.vad is not None:
            await self._start_vad()  # the VAD forgets the speech it was in
        await session_send(self, "input_audio_buffer.cleared")


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
    session = _Session(websocket, manager, metrics, config, "beta" if beta else "ga")
    metrics.realtime_sessions.inc()
    logger.info("realtime session %s opened (model %s)", session.id, config.model)
    result = "ok"
    try:
        result = await session.run(stop)
        if result == "ok":
            with contextlib.suppress(Exception):
                await websocket.close(1000)
    except _ClientGone:
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


async def _end(websocket: WebSocket, error: SttsError, session: _Session | None = None) -> None:
    """An ``error`` event, then the close that goes with it (if the client is still there)."""
    try:
        if session is not None:
            await session.send_error(error)
        else:
            event = {"type": "error", "event_id": _new_id("event"), "error": _error_body(error)}
            await websocket.send_text(json.dumps(event))
        reason = f"{error.error_type}.{error.code}"[:120]
        await websocket.close(_close_code(error), reason)
    except Exception:
        pass  # the client left first
