"""What every transcription route shares: read the upload, decode once, run, watch the client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request, UploadFile

from stts.audio import DecodedAudio, RawFormat, decode_audio
from stts.engines.base import CancelToken, TranscribeOptions
from stts.errors import AudioTooLarge, Cancelled, InvalidRequest, SttsError
from stts.logs import record_timing, timings_var
from stts.service import EngineManager, SlotKey
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


async def decode_upload(
    manager: EngineManager, key: SlotKey, data: bytes, raw: RawFormat | None
) -> DecodedAudio:
    """Decode off the event loop, after checking the engine has room (no wasted decoding)."""
    slot = manager.slot(key)
    if not slot.has_room():
        raise slot.reject()
    limits = manager.settings.audio.limits()
    started = time.perf_counter()
    try:
        return await asyncio.to_thread(decode_audio, data, raw=raw, limits=limits)
    finally:
        record_timing("decode", time.perf_counter() - started)


async def _wait_disconnect(request: Request) -> None:
    # After the body is read, receive() only returns when the client goes away.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


@dataclass(frozen=True, slots=True)
class Timed:
    """A transcript with the wall time the service took."""

    transcript: Transcript
    seconds: float


async def run_transcription(
    request: Request,
    manager: EngineManager,
    audio: DecodedAudio,
    key: SlotKey,
    options: TranscribeOptions,
) -> Timed:
    """Transcribe, stopping the engine if the client disconnects first."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    cancel = CancelToken()
    job = asyncio.ensure_future(
        manager.transcribe_async(audio, engine=key[0], model=key[1], options=options, cancel=cancel)
    )
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not job.done():
        cancel.cancel()
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError, SttsError):
            await job
        logger.info("client disconnected; transcription on %s stopped", key[0])
        raise Cancelled("the client disconnected")
    seconds = loop.time() - started
    timings = timings_var.get()
    if timings is not None:  # the worker recorded "engine"; the rest was waiting
        timings["queue"] = max(0.0, seconds * 1000.0 - timings.get("engine", 0.0))
    return Timed(job.result(), seconds)


def sse_event(payload: dict[str, object]) -> str:
    """One server-sent event carrying a JSON object."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def stream_transcription(
    manager: EngineManager,
    audio: DecodedAudio,
    key: SlotKey,
    options: TranscribeOptions,
) -> AsyncIterator[str]:
    """OpenAI's streaming events: ``transcript.text.delta`` per segment, then ``.done``."""
    loop = asyncio.get_running_loop()
    segments: asyncio.Queue[Segment | None] = asyncio.Queue()
    cancel = CancelToken()

    def on_segment(segment: Segment) -> None:
        loop.call_soon_threadsafe(segments.put_nowait, segment)

    job = asyncio.ensure_future(
        manager.transcribe_async(
            audio,
            engine=key[0],
            model=key[1],
            options=options,
            on_segment=on_segment,
            cancel=cancel,
        )
    )
    job.add_done_callback(lambda _t: segments.put_nowait(None))
    sent_any = False
    try:
        while (segment := await segments.get()) is not None:
            delta = (" " if sent_any else "") + segment.text.strip()
            sent_any = True
            yield sse_event({"type": "transcript.text.delta", "delta": delta})
        try:
            transcript = job.result()
        except SttsError as exc:
            yield sse_event({"type": "error", **exc.to_dict()})
            return
        yield sse_event({"type": "transcript.text.done", "text": transcript.text})
    finally:
        if not job.done():
            # The client went away mid-stream: stop the engine at its next segment.
            cancel.cancel()
            job.cancel()
