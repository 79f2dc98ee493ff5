"""The Wyoming protocol face: Home Assistant's voice pipeline talks to stts directly.

`Wyoming <https://github.com/OHF-Voice/wyoming>`_ is a small event protocol (a JSON line,
optional JSON data, optional binary payload per event). An ASR service answers:

- ``describe`` with ``info``: one ASR program, ``stts``, whose models are the same ids as
  ``/v1/models`` (``whisper``, ``whisper:base``, ``pocketsphinx``, ...), each with its
  languages;
- ``transcribe`` (optional model ``name`` and ``language``), then ``audio-start``,
  ``audio-chunk``... , ``audio-stop`` with ``transcript``, or with ``error`` when the
  audio or the request is bad, the queue is full, or every engine failed. The connection
  stays open for the next utterance either way.

With ``streaming.wyoming`` on, an utterance on an engine that streams (PocketSphinx,
Vosk, Whisper) is transcribed while it arrives, as Wyoming 1.7's transcript streaming
has it (``info`` says ``supports_transcript_streaming``): each audio chunk goes into a
:class:`~stts.streams.LiveStream` at once, and the answer is ``transcript-start``, a
``transcript-chunk`` for each piece of committed text (final: the chunks joined are the
transcript), then at ``audio-stop`` the last chunk, the whole ``transcript`` and
``transcript-stop``. An utterance that meets an error after ``transcript-start`` gets its
``error`` and then ``transcript-stop``. With no stream place free on the engine
(``max_streams``), or on an engine that can't stream, the utterance is answered whole.

The PCM that the chunks carry (any rate, 16- or 32-bit, any channel count) goes through
the same edge as every HTTP request: :func:`stts.audio.decode_audio` turns it into 16 kHz
mono float32 once (a streamed utterance: chunk by chunk, the same arithmetic), then the
shared :class:`~stts.service.EngineManager` schedules it with the same queues, deadlines
and fallback. Memory per connection is bounded: events are read
with limits on their data and payload (the ``wyoming`` package's own reader has none), and
an utterance longer than ``audio.max_duration_s`` or ``audio.max_bytes`` is refused.

It runs on the HTTP server's event loop when ``wyoming_uri`` is set
(``stts serve --wyoming tcp://0.0.0.0:10300``), so both faces share one loaded model.
Needs the ``wyoming`` extra: ``pip install 'stts-server[wyoming]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
import soxr

from stts import __version__
from stts.audio import SAMPLE_RATE, AudioArray, AudioLimits, RawFormat, decode_audio
from stts.catalogue import engine_model_ids, resolve_model
from stts.engines.base import TranscribeOptions
from stts.engines.registry import get_engine_class
from stts.errors import (
    AudioTooLong,
    ConfigError,
    CorruptAudio,
    EmptyAudio,
    InvalidRequest,
    ShuttingDown,
    SttsError,
    UnsupportedAudio,
)
from stts.install import install_hint
from stts.languages import LANGUAGE_NAMES
from stts.logs import request_id_var
from stts.service import EngineManager, Reservation, SlotKey
from stts.streams import LiveStream

if TYPE_CHECKING:
    from wyoming.event import Event

logger = logging.getLogger(__name__)

MAX_DATA_BYTES = 64 * 1024
"""Largest JSON data block accepted in one event (a transcribe or info is a few hundred)."""
MAX_CHUNK_BYTES = 4 * 1024 * 1024
"""Largest payload of one event (Home Assistant sends 1024-sample chunks: 2 KiB)."""
# Wyoming's 8-bit PCM is unsigned, as in WAV (its own converter biases it by 128).
_ENCODINGS = {1: "u8", 2: "s16le", 4: "s32le"}
_SCALES = {  # width -> (dtype, zero, full scale)
    1: ("u1", 128.0, 128.0),
    2: ("<i2", 0.0, 32768.0),
    4: ("<i4", 0.0, 2147483648.0),
}
_BACKPRESSURE_POLL_S = 0.02
_UPSTREAM = {  # engine -> (who made it, where it's from), for the info event's attribution
    "whisper": ("OpenAI Whisper, via faster-whisper", "https://github.com/SYSTRAN/faster-whisper"),
    "pocketsphinx": ("CMU PocketSphinx", "https://github.com/cmusphinx/pocketsphinx"),
    "vosk": ("Alpha Cephei Vosk", "https://alphacephei.com/vosk"),
    "wav2vec2": ("wav2vec 2.0 CTC, via ONNX Runtime", "https://onnxruntime.ai"),
}  # Wyoming's width in bytes -> stts.audio's encoding


def available() -> bool:
    """True when the ``wyoming`` package is installed."""
    return importlib.util.find_spec("wyoming") is not None


class ProtocolError(InvalidRequest):
    """The peer broke the Wyoming protocol (oversized or malformed event)."""

    code = "protocol_error"


class _PcmToStream:
    """A streamed utterance's PCM -> 16 kHz mono float32, chunk by chunk.

    The arithmetic of :func:`stts.audio.decode_audio` for raw PCM (integers scaled to
    [-1, 1), channels averaged, one soxr stream resampling), so a streamed utterance
    hears what a whole one would; a frame split across two chunks waits for the next.
    """

    def __init__(self, fmt: RawFormat, width: int) -> None:
        self.dtype, self.zero, self.scale = _SCALES[width]
        self.channels = fmt.channels
        self.frame_bytes = width * fmt.channels
        self._rest = b""
        self._resampler = (
            None
            if fmt.sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(fmt.sample_rate, SAMPLE_RATE, 1, dtype="float32")
        )

    def convert(self, data: bytes) -> AudioArray:
        """The 16 kHz samples this chunk completes."""
        if self._rest:
            data = self._rest + data
        usable = len(data) - len(data) % self.frame_bytes
        self._rest = data[usable:]
        frames = np.frombuffer(data, self.dtype, count=usable // self.frame_bytes * self.channels)
        samples: AudioArray = frames.astype(np.float32)
        if self.zero:
            samples -= np.float32(self.zero)
        samples *= np.float32(1.0 / self.scale)
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1, dtype=np.float32)
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return np.clip(samples, -1.0, 1.0, out=samples)

    def flush(self) -> AudioArray:
        """The end of the utterance: what the resampler still holds."""
        if self._rest:
            raise CorruptAudio(
                f"the PCM ends with {len(self._rest)} bytes, part of a "
                f"{self.frame_bytes}-byte frame"
            )
        if self._resampler is None:
            return np.zeros(0, np.float32)
        tail: AudioArray = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        return np.clip(tail, -1.0, 1.0, out=tail)


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
    converter: _PcmToStream | None = None
    pump: asyncio.Task[None] | None = None  # sends committed text as transcript-chunks
    transcript_started: bool = False  # transcript-start was sent


def wyoming_languages(manager: EngineManager, name: str) -> list[str]:
    """Languages to advertise for an engine: the ones its default model really decodes
    (Whisper base: 99, large-v3: 100), as the HTTP faces accept them."""
    engine_cls = get_engine_class(name)
    caps = engine_cls(manager.settings).capabilities  # read from files: nothing is loaded
    if caps.languages is None:
        return list(LANGUAGE_NAMES)
    return sorted(caps.languages)


def streams_on_wyoming(manager: EngineManager, key: SlotKey) -> bool:
    """Whether Wyoming utterances on this engine are transcribed as they arrive."""
    return manager.settings.streaming.wyoming and manager.capabilities(key).streaming


def build_info(manager: EngineManager) -> Any:
    """The ``info`` event's content: one ASR program with every servable model."""
    from wyoming.info import AsrModel, AsrProgram, Attribution, Info

    models = []
    streaming = False
    for model_id in engine_model_ids(manager):  # aliases (whisper-1) are the HTTP API's
        engine = model_id.partition(":")[0]
        streaming = streaming or streams_on_wyoming(manager, resolve_model(manager, model_id))
        models.append(
            AsrModel(
                name=model_id,
                attribution=Attribution(*_UPSTREAM.get(engine, (engine, ""))),
                installed=True,
                description=f"stts engine {engine}",
                version=None,
                languages=wyoming_languages(manager, engine),
            )
        )
    program = AsrProgram(
        name="stts",
        attribution=Attribution(name="stts", url=""),
        installed=True,
        description="stts: offline speech-to-text",
        version=__version__,
        models=models,
        # One program for every model: it streams when any of its models does (the
        # others answer with one transcript, which streaming clients accept too).
        supports_transcript_streaming=streaming,
    )
    return Info(asr=[program])


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """One event, with bounds on every part; None at end of stream.

    The same wire format as ``wyoming.event.async_read_event``, which would read whatever
    length a header declares; here a declared length over the limit is refused before a
    byte of it is read.
    """
    from wyoming.event import Event

    try:
        line = await reader.readline()  # bounded by the StreamReader's limit (64 KiB)
    except ValueError as exc:  # LimitOverrunError: a header line without an end
        raise ProtocolError("event header line too long") from exc
    if not line.endswith(b"\n"):
        return None  # end of stream, possibly mid-header: the peer went away
    try:
        header = json.loads(line)
        kind = header["type"]
        data = header.get("data") or {}
        data_length = int(header.get("data_length") or 0)
        payload_length = int(header.get("payload_length") or 0)
        if not isinstance(kind, str) or not isinstance(data, dict):
            raise TypeError("type must be a string and data an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"malformed event header: {exc}") from exc
    if not 0 <= data_length <= MAX_DATA_BYTES:
        raise ProtocolError(f"event data of {data_length} bytes (limit {MAX_DATA_BYTES})")
    if not 0 <= payload_length <= MAX_CHUNK_BYTES:
        raise ProtocolError(f"event payload of {payload_length} bytes (limit {MAX_CHUNK_BYTES})")
    try:
        if data_length:
            extra = json.loads(await reader.readexactly(data_length))
            if not isinstance(extra, dict):
                raise ProtocolError("event data must be a JSON object")
            data.update(extra)
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        return None  # the peer went away mid-event
    except ValueError as exc:
        raise ProtocolError(f"malformed event data: {exc}") from exc
    return Event(type=kind, data=data, payload=payload)


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
            if width not in _ENCODINGS:
                raise UnsupportedAudio(
                    f"{width * 8}-bit PCM is not supported; send 8-, 16- or 32-bit samples"
                )
            utt.fmt = RawFormat(sample_rate=rate, channels=channels, encoding=_ENCODINGS[width])  # type: ignore[arg-type]
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
        utt.converter = _PcmToStream(utt.fmt, utt.width)
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


class WyomingServer:
    """The listener: one :class:`WyomingSession` task per connection."""

    def __init__(
        self,
        uri: str,
        manager: EngineManager,
        limits: AudioLimits | None = None,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        if not available():
            raise ConfigError(
                "wyoming_uri is set but the wyoming package is missing: " + install_hint("wyoming")
            )
        self.uri = uri
        self._address = urlsplit(uri)  # checked by Settings: tcp://host:port or unix:///path
        self.manager = manager
        self.limits = limits or manager.settings.audio.limits()
        self.on_result = on_result
        self._server: asyncio.Server | None = None
        self._sessions: dict[asyncio.Task[Any], WyomingSession] = {}
        self._info: Any = None

    @property
    def port(self) -> int | None:
        """The bound TCP port (useful with port 0), or None for a Unix socket."""
        if self._server is None or not self._server.sockets:
            return None
        address = self._server.sockets[0].getsockname()
        return int(address[1]) if isinstance(address, tuple) else None

    async def start(self) -> None:
        """Bind and start accepting; returns at once."""
        self._info = build_info(self.manager)
        if self._address.scheme == "tcp":
            self._server = await asyncio.start_server(
                self._accept, host=self._address.hostname, port=self._address.port
            )
        else:
            self._server = await asyncio.start_unix_server(self._accept, path=self._address.path)
        logger.info("wyoming listening on %s", self.uri)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = WyomingSession(
            reader, writer, self.manager, self._info, self.limits, self.on_result
        )
        task = asyncio.current_task()
        if task is not None:
            self._sessions[task] = session
        try:
            await session.run()
        finally:
            if task is not None:
                self._sessions.pop(task, None)

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop accepting; give utterances under way up to ``grace_s`` to get their answer
        (nothing lost on a graceful stop); then end every session and remove the Unix
        socket file."""
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace_s
        while any(s.busy for s in self._sessions.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=5)
        if self._address.scheme == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._address.path)
