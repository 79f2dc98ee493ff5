"""One Wyoming client connection: its events answered, one utterance at a time.

An utterance is buffered and answered whole, or (``streaming.wyoming``, an engine that
streams) transcribed as it arrives; either way it takes its engine place at
``audio-start`` and is refused, its buffer dropped, the moment it crosses
``audio.max_bytes`` or ``audio.max_duration_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stts.audio import AudioLimits, RawFormat, decode_audio
from stts.catalogue import resolve_model
from stts.engines.base import TranscribeOptions
from stts.errors import (
    AudioTooLong,
    EmptyAudio,
    ShuttingDown,
    SttsError,
    UnsupportedAudio,
)
from stts.logs import request_id_var
from stts.service import EngineManager, Reservation, SlotKey
from stts.streams import LiveStream
from stts.wyoming.wire import ENCODINGS, PcmToStream, ProtocolError, read_event

if TYPE_CHECKING:
    from wyoming.event import Event

logger = logging.getLogger(__name__)

_BACKPRESSURE_POLL_S = 0.02


@dataclass
class _Utterance:
    """What one transcribe ... audio-stop exchange has gathered so far."""

    key: SlotKey | None = None
    language: str | None = None
    fmt: RawFormat | None = None
    width: int = 2
    pcm: bytearray = field(default_factory=bytearray)
    refused: SttsError | None = None  # set once; later chunks are dropped, stop answers it
    reservation: Reservation | None = None  # the engine place, held from audio-start
    started: bool = False  # an event of this utterance arrived: a drain waits for its answer
    received: int = 0  # bytes of PCM received
    stream: LiveStream | None = None  # transcribed as it arrives (streaming.wyoming)
    converter: PcmToStream | None = None
    pump: asyncio.Task[None] | None = None  # sends committed text as transcript-chunks
    transcript_started: bool = False  # transcript-start was sent


def streams_on_wyoming(manager: EngineManager, key: SlotKey) -> bool:
    """Whether Wyoming utterances on this engine are transcribed as they arrive."""
    return manager.settings.streaming.wyoming and manager.capabilities(key).streaming


class WyomingSession:
    """One client connection: reads events, answers them, keeps the connection open."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        manager: EngineManager,
        info: Any,
        limits: AudioLimits,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.manager = manager
        self.info = info
        self.on_result = on_result or (lambda status: None)
        self.utterance = _Utterance()
        self.limits = limits
        self.answering = False
        self._max_backlog_s = manager.settings.streaming.max_backlog_s / 2

    @property
    def busy(self) -> bool:
        """An utterance is under way or being answered: a graceful stop waits for it."""
        return self.answering or self.utterance.started

    async def run(self) -> None:
        """Serve until the peer closes, breaks the protocol, or the server stops."""
        try:
            while True:
                try:
                    event = await read_event(self.reader)
                except ProtocolError as exc:
                    logger.info("wyoming peer broke the protocol: %s", exc.message)
                    self.on_result(exc.code)
                    await self._send_error(exc)
                    return
                if event is None:
                    return
                try:
                    await self.handle(event)
                except (KeyError, TypeError, ValueError) as exc:  # fields missing or mistyped
                    error = ProtocolError(f"malformed {event.type} event: {exc!r}")
                    logger.info("wyoming peer broke the protocol: %s", error.message)
                    self.on_result(error.code)
                    await self._send_error(error)
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass  # the peer hung up, or the server is shutting down
        finally:
            await self._drop(self.utterance)
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    def _stopped(self) -> bool:
        return self.manager.aborted

    async def handle(self, event: Event) -> None:
        """Answer one event. Unknown event types are ignored, as the protocol asks."""
        from wyoming.asr import Transcribe
        from wyoming.audio import AudioChunk, AudioStart, AudioStop
        from wyoming.info import Describe

        if Describe.is_type(event.type):
            await self._write(self.info.event())
        elif Transcribe.is_type(event.type):
            await self._start_utterance(Transcribe.from_event(event))
            self.utterance.started = True
        elif AudioStart.is_type(event.type):
            self.utterance.started = True
            start = AudioStart.from_event(event)
            await self._set_format(start.rate, start.width, start.channels)
        elif AudioChunk.is_type(event.type):
            self.utterance.started = True
            chunk = AudioChunk.from_event(event)
            if self.utterance.fmt is None:  # audio-start is optional: the chunk says it too
                await self._set_format(chunk.rate, chunk.width, chunk.channels)
            await self._add(chunk.audio)
        elif AudioStop.is_type(event.type):
            await self._finish()

    async def _start_utterance(self, request: Any) -> None:
        for field_name in ("name", "language"):
            if not isinstance(getattr(request, field_name), str | None):
                raise TypeError(f"transcribe {field_name} must be a string")
        await self._drop(self.utterance)
        self.utterance = _Utterance()
        try:
            if request.name:
                self.utterance.key = resolve_model(self.manager, request.name)
            # The same language rules as HTTP (en-US, english -> en), refused up front.
            key = self.utterance.key or self.manager.resolve(None)
            options = self.manager.check_options(key, TranscribeOptions(language=request.language))
            self.utterance.language = options.language
        except SttsError as exc:
            self.utterance.refused = exc

    async def _set_format(self, rate: int, width: int, channels: int) -> None:
        utt = self.utterance
        if utt.refused is not None:
            return
        await self._drop(utt)  # a second audio-start starts the audio again
        utt.pcm.clear()
        utt.received = 0
        try:
            if width not in ENCODINGS:
                raise UnsupportedAudio(
                    f"{width * 8}-bit PCM is not supported; send 8-, 16- or 32-bit samples"
                )
            utt.fmt = RawFormat(sample_rate=rate, channels=channels, encoding=ENCODINGS[width])  # type: ignore[arg-type]
            utt.width = width
            key = utt.key or self.manager.resolve(None)
            if streams_on_wyoming(self.manager, key) and await self._open_stream(utt, key):
                return
            # The place on the engine is taken now: a full queue is said before the
            # utterance is buffered, and an admitted one is never refused at audio-stop.
            utt.reservation = self.manager.reserve(key)
        except SttsError as exc:
            utt.refused = exc

    async def _open_stream(self, utt: _Utterance, key: SlotKey) -> bool:
        """Start transcribing the utterance as it arrives; False: answer it whole."""
        assert utt.fmt is not None
        try:
            utt.stream = await LiveStream.open(
                self.manager, key, TranscribeOptions(language=utt.language)
            )
        except ShuttingDown:
            raise
        except SttsError as exc:
            # No stream place free (max_streams), or the engine would not open one: the
            # utterance is answered whole, with the service's queue and fallbacks.
            logger.info("wyoming utterance answered whole: %s (%s)", exc.message, exc.code)
            return False
        utt.converter = PcmToStream(utt.fmt, utt.width)
        utt.pump = asyncio.ensure_future(self._pump(utt, utt.stream))
        return True

    async def _pump(self, utt: _Utterance, stream: LiveStream) -> None:
        """Send committed text as it comes (ends when the stream is closed or fails)."""
        with contextlib.suppress(SttsError, ConnectionError):  # the answer says it
            async for update in stream.updates():
                await self._send_chunk(utt, update.text)

    async def _send_chunk(self, utt: _Utterance, text: str) -> None:
        from wyoming.asr import TranscriptChunk, TranscriptStart

        if not text:
            return
        if not utt.transcript_started:
            utt.transcript_started = True
            await self._write(TranscriptStart(language=utt.language).event())
        await self._write(TranscriptChunk(text=text).event())

    @staticmethod
    async def _drop(utt: _Utterance) -> None:
        """Give an unanswered utterance's engine place (or live stream) back."""
        if utt.reservation is not None:
            utt.reservation.release()
            utt.reservation = None
        stream, utt.stream = utt.stream, None
        if stream is not None:
            await stream.close()  # ends the pump: it reads the stream's updates
        if utt.pump is not None:
            await asyncio.wait({utt.pump})
            utt.pump = None

    async def _add(self, audio: bytes) -> None:
        utt = self.utterance
        if utt.refused is not None or utt.fmt is None:
            return
        utt.received += len(audio)
        seconds = utt.received / (utt.width * utt.fmt.channels * utt.fmt.sample_rate)
        if utt.received > self.limits.max_bytes or seconds > self.limits.max_duration_s:
            utt.refused = AudioTooLong(
                f"the audio is longer than the limit of {self.limits.max_duration_s:g} s "
                f"or {self.limits.max_bytes} bytes"
            )
            utt.pcm = bytearray()  # give the memory back now, not at audio-stop
            await self._drop(utt)
            return
        if utt.stream is None:
            utt.pcm += audio
            return
        assert utt.converter is not None
        stream = utt.stream
        try:
            # Audio sent faster than the engine decodes waits in the socket, not in
            # memory: this connection reads on once the stream has caught up (TCP slows
            # the sender down), instead of failing the utterance as a full backlog would.
            while stream.backlog_s > self._max_backlog_s and stream.error is None:
                await asyncio.sleep(_BACKPRESSURE_POLL_S)
            stream.push(utt.converter.convert(audio))
        except SttsError as exc:  # too fast for the engine, too long, or a failed step
            utt.refused = exc
            await self._drop(utt)

    async def _finish(self) -> None:
        # A transcribe event's model and language hold for one utterance, as in
        # wyoming-faster-whisper: Home Assistant sends one before every utterance.
        utt, self.utterance = self.utterance, _Utterance()
        token = request_id_var.set(uuid.uuid4().hex[:16])  # log lines carry it, engine's too
        self.answering = True
        try:
            await self._answer(utt)
        finally:
            await self._drop(utt)
            self.answering = False
            request_id_var.reset(token)

    async def _answer(self, utt: _Utterance) -> None:
        from wyoming.asr import Transcript

        if utt.stream is not None or utt.transcript_started:
            await self._answer_stream(utt)
            return
        started = time.perf_counter()
        try:
            if utt.refused is not None:
                raise utt.refused
            if utt.fmt is None or not utt.pcm:
                raise EmptyAudio("no audio between audio-start and audio-stop")
            pcm, utt.pcm = bytes(utt.pcm), bytearray()
            # Off the event loop: other connections and HTTP go on while this decodes.
            audio = await asyncio.to_thread(
                decode_audio, pcm, raw=utt.fmt, limits=self.limits, cancel=self._stopped
            )
            del pcm
            engine, model = utt.key if utt.key else (None, None)
            result = await self.manager.transcribe_async(
                audio,
                engine=engine,
                model=model,
                options=TranscribeOptions(language=utt.language),
                reservation=utt.reservation,
            )
        except SttsError as exc:
            logger.info("wyoming transcription refused: %s (%s)", exc.message, exc.code)
            self.on_result(exc.code)
            await self._send_error(exc)
            return
        except Exception:  # a bug: log it, answer, keep the server up
            logger.exception("wyoming transcription failed")
            self.on_result("internal_error")
            await self._send_error(SttsError("internal error"))
            return
        logger.info(
            "wyoming transcript: %.2f s of audio in %.2f s by %s:%s",
            audio.duration,
            time.perf_counter() - started,
            result.engine,
            result.model,
        )
        self.on_result("ok")
        await self._write(Transcript(text=result.text, language=result.language).event())

    async def _answer_stream(self, utt: _Utterance) -> None:
        """The end of a streamed utterance: the last chunk, the transcript, then
        transcript-stop (or the error, then transcript-stop)."""
        from wyoming.asr import Transcript, TranscriptStart, TranscriptStop

        started = time.perf_counter()
        try:
            if utt.refused is not None:
                raise utt.refused
            if utt.stream is None or utt.converter is None or not utt.received:
                raise EmptyAudio("no audio between audio-start and audio-stop")
            utt.stream.push(utt.converter.flush())
            last, result = await utt.stream.finish()
            await self._drop(utt)  # the pump has sent every chunk before the last
            await self._send_chunk(utt, last.text)
        except SttsError as exc:
            logger.info("wyoming transcription refused: %s (%s)", exc.message, exc.code)
            self.on_result(exc.code)
            await self._send_error(exc)
        except Exception:  # a bug: log it, answer, keep the server up
            logger.exception("wyoming transcription failed")
            self.on_result("internal_error")
            await self._send_error(SttsError("internal error"))
        else:
            logger.info(
                "wyoming streamed transcript: %.2f s of audio, final %.2f s after audio-stop, "
                "by %s:%s",
                result.duration,
                time.perf_counter() - started,
                result.engine,
                result.model,
            )
            self.on_result("ok")
            if not utt.transcript_started:  # nothing was said: still a streamed answer
                utt.transcript_started = True
                await self._write(TranscriptStart(language=utt.language).event())
            await self._write(Transcript(text=result.text, language=result.language).event())
        if utt.transcript_started:
            with contextlib.suppress(ConnectionError):
                await self._write(TranscriptStop().event())

    async def _send_error(self, exc: SttsError) -> None:
        from wyoming.error import Error

        with contextlib.suppress(ConnectionError):
            await self._write(Error(text=exc.message, code=exc.code).event())

    async def _write(self, event: Event) -> None:
        from wyoming.event import async_write_event

        await async_write_event(event, self.writer)
