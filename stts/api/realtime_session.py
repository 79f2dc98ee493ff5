"""One realtime transcription session (one WebSocket): its configuration, audio
conversion, server VAD and items, and the client events it handles."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import time
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import WebSocket

from stts.api.drain import GracefulStop
from stts.api.realtime_config import (
    ClientError,
    Dialect,
    SessionConfig,
    apply_update,
    invalid,
)
from stts.api.realtime_item import ClientGone, RealtimeItem, error_body, new_id, send_event
from stts.audio import SAMPLE_RATE, AudioArray
from stts.errors import (
    AudioTooLarge,
    AudioTooLong,
    InvalidRequest,
    RequestTimeout,
    SttsError,
    shorten,
)
from stts.metrics import Metrics
from stts.pcm import PcmConverter
from stts.service import EngineManager, shutting_down
from stts.vad import SileroVad, VadStream

logger = logging.getLogger(__name__)

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


class RealtimeSession:
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
        self.id = new_id("sess")
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
        self.item: RealtimeItem | None = None  # the item audio goes to
        self.items: list[RealtimeItem] = []  # items not yet done
        self.previous_item_id: str | None = None

    # -- sending --------------------------------------------------------------

    async def send(self, event: dict[str, Any]) -> None:
        """Send one event; ClientGone once the client has left."""
        text = json.dumps(event, ensure_ascii=False)
        async with self.send_lock:
            if self.gone:
                raise ClientGone()
            try:
                await self.websocket.send_text(text)
            except Exception as exc:
                self.gone = True
                raise ClientGone() from exc

    async def send_error(self, error: SttsError, client_event_id: str | None = None) -> None:
        """An ``error`` event."""
        await send_event(self, "error", error=error_body(error, client_event_id))

    async def send_session(self, created: bool) -> None:
        """``session.created``/``.updated`` (beta: ``transcription_session.*``)."""
        prefix = "transcription_session" if self.dialect == "beta" else "session"
        await send_event(
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
                await send_event(
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

    def _open_item(self, audio_start: int) -> RealtimeItem:
        item = RealtimeItem(self, audio_start)
        previous = self.items[-1].task if self.items else None
        item.task = asyncio.ensure_future(item.run(previous))
        self.items = [i for i in self.items if i.task and not i.task.done()]
        self.items.append(item)
        return item

    async def _push(self, item: RealtimeItem, samples: AudioArray) -> None:
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

    async def _commit(self, item: RealtimeItem, *, announce_stop: bool) -> None:
        """The item's audio is complete: say so, then let its task finish it."""
        self.item = None
        if self.vad is None:  # manual: the resampler's last few ms belong to this item
            tail = self.converter.flush()
            self.position += len(tail)
            await self._push(item, tail)
            self.fed = self.position
        if announce_stop:
            await send_event(
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
        await send_event(
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
            await send_event(
                self, "conversation.item.created", previous_item_id=self.previous_item_id, item=body
            )
        else:
            for kind in ("conversation.item.added", "conversation.item.done"):
                await send_event(self, kind, previous_item_id=self.previous_item_id, item=body)
        self.previous_item_id = item.id
        item.finish.set()

    async def _clear(self) -> None:
        item, self.item = self.item, None
        if item is not None:
            await item.drop()
        self.converter.flush()
        if self.vad is not None:
            await self._start_vad()  # the VAD forgets the speech it was in
        await send_event(self, "input_audio_buffer.cleared")
