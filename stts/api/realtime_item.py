"""One item of a realtime transcription session: an utterance transcribed while it is
spoken, on its own :class:`~stts.streams.LiveStream`, and the events sent about it
(deltas of committed words, opt-in tentative text, ``completed`` or ``failed``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from stts.api.realtime_config import TENTATIVE_EVENT
from stts.audio import SAMPLE_RATE, AudioArray
from stts.engines.streaming import StreamUpdate
from stts.errors import Overloaded, ShuttingDown, SttsError
from stts.streams import LiveStream

if TYPE_CHECKING:
    from stts.api.realtime_session import RealtimeSession

logger = logging.getLogger(__name__)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:21]}"


class ClientGone(Exception):
    """The client left; nothing more can be sent."""


class RealtimeItem:
    """One utterance of a session: its stream, and what was sent about it."""

    def __init__(self, session: RealtimeSession, audio_start: int) -> None:
        self.session = session
        self.id = new_id("item")
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
        except ClientGone:
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
        await send_event(
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
            await send_event(
                self.session,
                "conversation.item.input_audio_transcription.delta",
                item_id=self.id,
                content_index=0,
                delta=text,
            )
        if self.session.config.tentative and update.tentative != self.tentative:
            self.tentative = update.tentative
            await send_event(
                self.session, TENTATIVE_EVENT, item_id=self.id, content_index=0, text=self.tentative
            )

    async def _fail(self, error: SttsError) -> None:
        """The item cannot go on: its stream is closed, the rest of its audio ignored."""
        self.dropped = True
        if isinstance(error, ShuttingDown):
            self.session.fatal = error
        with contextlib.suppress(ClientGone):
            if self.committed:
                await send_event(
                    self.session,
                    "conversation.item.input_audio_transcription.failed",
                    item_id=self.id,
                    content_index=0,
                    error=error_body(error),
                )
            else:
                await self.session.send_error(error)

    async def drop(self) -> None:
        """Stop this item now (cleared, or the session ends)."""
        self.dropped = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task})


def error_body(error: SttsError, client_event_id: str | None = None) -> dict[str, Any]:
    return {
        "type": error.error_type,
        "code": error.code,
        "message": error.message,
        "param": error.param,
        "event_id": client_event_id,
    }


async def send_event(target: RealtimeSession, kind: str, /, **fields: Any) -> None:
    """Send one server event (every event has ``type`` and its own ``event_id``)."""
    await target.send({"type": kind, "event_id": new_id("event"), **fields})
