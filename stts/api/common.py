"""What every transcription route shares: read the upload, decode once, run, watch the client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from fastapi import Request, UploadFile

from stts.audio import DecodedAudio, RawFormat, decode_audio
from stts.engines.base import CancelToken, TranscribeOptions
from stts.errors import (
    AudioTooLarge,
    Cancelled,
    InvalidRequest,
    SttsError,
    TranscriptionTimeout,
)
from stts.formats import to_verbose_json, usage
from stts.logs import record_timing, timings_var
from stts.service import (
    EngineManager,
    LanguageGuess,
    Reservation,
    SlotKey,
    shutting_down,
)
from stts.transcript import Segment, Transcript

logger = logging.getLogger(__name__)

_READ_CHUNK = 1 << 20


def get_manager(request: Request) -> EngineManager:
    """The app's EngineManager (a FastAPI dependency)."""
    manager: EngineManager = request.app.state.manager
    return manager


async def read_bounded(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """Bytes from a stream (an upload, a request body), refused as soon as they pass the limit."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise AudioTooLarge(f"the audio is larger than the limit of {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def _upload_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_READ_CHUNK):
        yield chunk


async def read_upload(upload: UploadFile, max_bytes: int) -> bytes:
    """The uploaded bytes, refused as soon as they pass the limit."""
    return await read_bounded(_upload_chunks(upload), max_bytes)


def raw_format_from_content_type(content_type: str | None) -> RawFormat | None:
    """``audio/L16; rate=8000; channels=2`` (RFC 2586) and ``audio/pcm`` describe raw PCM."""
    if not content_type:
        return None
    main, *params = (p.strip() for p in content_type.split(";"))
    main = main.lower()
    if main not in {"audio/l16", "audio/pcm", "audio/x-raw"}:
        return None
    values = dict(p.split("=", 1) for p in params if "=" in p)
    try:
        rate = int(values.get("rate", 16000))
        channels = int(values.get("channels", 1))
    except ValueError as exc:
        raise InvalidRequest("audio/L16 rate and channels must be integers") from exc
    # RFC 2586 L16 is big-endian; we accept the little-endian PCM everyone sends as audio/pcm.
    return RawFormat(sample_rate=rate, channels=channels, encoding="s16le")


class Admitted:
    """One request's place on its engine, held from before decoding to the end.

    ``async with Admitted(request, manager, key) as work:`` refuses at once (503
    Overloaded / ShuttingDown) when the engine has no room, before anything is decoded;
    then ``await work.decode(...)`` and ``await work.run(...)`` or ``work.stream(...)``.
    Decoding is cancelled when the client leaves, the graceful stop runs out of time or
    ``decode_timeout_s`` passes (the engine's own deadline starts when its work does);
    the place is freed when the engine job really ends.
    """

    def __init__(self, request: Request, manager: EngineManager, key: SlotKey) -> None:
        self.request = request
        self.manager = manager
        self.key = key
        self.cancel = CancelToken()
        self.engine: SlotKey = key
        self._reservation: Reservation | None = None

    async def __aenter__(self) -> Admitted:
        self._reservation = self.manager.reserve(self.key)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reservation is not None:
            self._reservation.release()  # no-op once a job owns the place

    @property
    def reservation(self) -> Reservation:
        """The held place (only inside ``async with``)."""
        assert self._reservation is not None, "use Admitted as an async context manager"
        return self._reservation

    def _stopped(self) -> bool:
        return self.cancel.cancelled or self.manager.aborted

    async def decode(self, data: bytes, raw: RawFormat | None) -> DecodedAudio:
        """Decode off the event loop; stopped by a disconnect, the stop or the deadline."""
        limits = self.manager.settings.audio.limits()
        budget = self.manager.settings.decode_timeout_s
        started = time.perf_counter()
        job = asyncio.ensure_future(
            asyncio.to_thread(decode_audio, data, raw=raw, limits=limits, cancel=self._stopped)
        )
        watcher = asyncio.ensure_future(_wait_disconnect(self.request))
        try:
            done, _ = await asyncio.wait(
                {job, watcher}, timeout=budget, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            self.cancel.cancel()
            raise
        finally:
            watcher.cancel()
            record_timing("decode", time.perf_counter() - started)
        if job in done:
            if self.manager.aborted and job.exception() is not None:
                raise shutting_down("the server is shutting down; the request was stopped")
            return job.result()
        # Stop the decoder at its next frame and wait for it, so the place is not freed
        # while its memory is still in use.
        self.cancel.cancel()
        with contextlib.suppress(SttsError):
            await job
        if watcher in done:
            raise Cancelled("the client disconnected")
        raise TranscriptionTimeout(f"decoding took longer than {budget:.0f} s and was stopped")

    async def run(self, audio: DecodedAudio, options: TranscribeOptions) -> Timed:
        """Transcribe in the held place, stopping the engine if the client disconnects."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        job = asyncio.ensure_future(
            self.manager.transcribe_async(
                audio,
                options=options,
                cancel=self.cancel,
                reservation=self.reservation,
            )
        )
        watcher = asyncio.ensure_future(_wait_disconnect(self.request))
        try:
            await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not job.done():
            self.cancel.cancel()
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError, SttsError):
                await job
            logger.info("client disconnected; transcription on %s stopped", self.key[0])
            raise Cancelled("the client disconnected")
        seconds = loop.time() - started
        timings = timings_var.get()
        if timings is not None:  # the worker recorded "engine"; the rest was waiting
            timings["queue"] = max(0.0, seconds * 1000.0 - timings.get("engine", 0.0))
        return Timed(job.result(), seconds)

    async def detect_language(self, audio: DecodedAudio, top: int) -> LanguageGuess:
        """Identify the language in the held place."""
        return await self.manager.detect_language_async(
            audio, top=top, reservation=self.reservation
        )

    async def stream(
        self, audio: DecodedAudio, options: TranscribeOptions, verbose: Verbose | None = None
    ) -> AsyncIterator[str]:
        """OpenAI's streaming events, started: the first event is already decoded.

        Errors before the first event are raised (the route answers them with their
        status); once the stream has begun, an error is its last event. ``self.engine``
        names the engine that answered as soon as this returns. ``verbose``: each delta
        is preceded by a ``transcript.text.segment`` event with the segment's times, and
        ``done`` carries the whole ``verbose_json`` body.
        """
        events = _transcription_events(self, audio, options, verbose)
        first = asyncio.ensure_future(anext(events))
        watcher = asyncio.ensure_future(_wait_disconnect(self.request))
        try:
            await asyncio.wait({first, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not first.done():
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError, SttsError):
                await first
            await events.aclose()
            raise Cancelled("the client disconnected")
        try:
            head = first.result()
        except BaseException:
            await events.aclose()
            raise
        return _prepend(head, events)


async def _prepend(head: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    yield head
    async for item in rest:
        yield item


async def _wait_disconnect(request: Request) -> None:
    # After the body is read, receive() only returns when the client goes away.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


@dataclass(frozen=True, slots=True)
class Verbose:
    """What a ``verbose_json`` stream adds: segment events (with their words, if asked)."""

    words: bool = False


@dataclass(frozen=True, slots=True)
class Timed:
    """A transcript with the wall time the service took."""

    transcript: Transcript
    seconds: float


def warning_headers(audio: DecodedAudio) -> dict[str, str]:
    """``X-STT-Warning``: what of a damaged file was skipped (absent when nothing was)."""
    if not audio.warnings:
        return {}
    text = "; ".join(audio.warnings)
    return {"X-STT-Warning": text if len(text) <= 500 else text[:499] + "…"}


def sse_event(payload: dict[str, object]) -> str:
    """One server-sent event carrying a JSON object."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _segment_event(segment: Segment, words: bool) -> dict[str, object]:
    # OpenAI's own event type (its diarized streams send it); no speaker here.
    event: dict[str, object] = {
        "type": "transcript.text.segment",
        "id": str(segment.id),
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
    }
    if words:
        event["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in segment.words]
    return event


async def _transcription_events(
    work: Admitted, audio: DecodedAudio, options: TranscribeOptions, verbose: Verbose | None
) -> AsyncGenerator[str, None]:
    """``transcript.text.delta`` per segment, then ``.done``; errors after the first
    event become an ``error`` event (before it, they are raised). ``verbose``: a
    ``transcript.text.segment`` event before each delta, the verbose_json body in done."""
    loop = asyncio.get_running_loop()
    segments: asyncio.Queue[Segment | None] = asyncio.Queue()

    def on_segment(segment: Segment) -> None:
        loop.call_soon_threadsafe(segments.put_nowait, segment)

    def on_engine(key: SlotKey) -> None:
        work.engine = key

    job = asyncio.ensure_future(
        work.manager.transcribe_async(
            audio,
            options=options,
            on_segment=on_segment,
            cancel=work.cancel,
            reservation=work.reservation,
            on_engine=on_engine,
        )
    )
    job.add_done_callback(lambda _t: segments.put_nowait(None))
    sent_any = False
    try:
        while (segment := await segments.get()) is not None:
            delta = (" " if sent_any else "") + segment.text.strip()
            sent_any = True
            if verbose is not None:
                yield sse_event(_segment_event(segment, verbose.words))
            yield sse_event({"type": "transcript.text.delta", "delta": delta})
        try:
            transcript = job.result()
        except SttsError as exc:
            if not sent_any:
                raise
            yield sse_event({"type": "error", **exc.to_dict()})
            return
        done: dict[str, object] = {
            "type": "transcript.text.done",
            "text": transcript.text,
            "usage": usage(transcript),
        }
        if verbose is not None:
            done["verbose_json"] = to_verbose_json(transcript, words=verbose.words)
        yield sse_event(done)
    finally:
        if not job.done():
            # The client went away mid-stream: stop the engine at its next segment.
            work.cancel.cancel()
            job.cancel()
