"""The Wyoming wire: events read with bounds, and PCM chunks turned into 16 kHz samples.

``wyoming.event.async_read_event`` reads whatever length a header declares; here every
part of an event has a limit that is checked before a byte of it is read.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import numpy as np
import soxr

from stts.audio import SAMPLE_RATE, AudioArray, RawFormat
from stts.errors import CorruptAudio, InvalidRequest

if TYPE_CHECKING:
    from wyoming.event import Event

MAX_DATA_BYTES = 64 * 1024
"""Largest JSON data block accepted in one event (a transcribe or info is a few hundred)."""
MAX_CHUNK_BYTES = 4 * 1024 * 1024
"""Largest payload of one event (Home Assistant sends 1024-sample chunks: 2 KiB)."""
# Wyoming's 8-bit PCM is unsigned, as in WAV (its own converter biases it by 128).
ENCODINGS = {1: "u8", 2: "s16le", 4: "s32le"}  # Wyoming width in bytes -> RawFormat encoding
SCALES = {  # width -> (dtype, zero, full scale)
    1: ("u1", 128.0, 128.0),
    2: ("<i2", 0.0, 32768.0),
    4: ("<i4", 0.0, 2147483648.0),
}


class ProtocolError(InvalidRequest):
    """The peer broke the Wyoming protocol (oversized or malformed event)."""

    code = "protocol_error"


class PcmToStream:
    """A streamed utterance's PCM -> 16 kHz mono float32, chunk by chunk.

    The arithmetic of :func:`stts.audio.decode_audio` for raw PCM (integers scaled to
    [-1, 1), channels averaged, one soxr stream resampling), so a streamed utterance
    hears what a whole one would; a frame split across two chunks waits for the next.
    """

    def __init__(self, fmt: RawFormat, width: int) -> None:
        self.dtype, self.zero, self.scale = SCALES[width]
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
