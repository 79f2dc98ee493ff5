"""Decode any common audio to 16 kHz mono float32, once, at the edge.

One public function, :func:`decode_audio`, built from small private steps:
open the container (PyAV, no ffmpeg subprocess) -> refuse cheaply from the header
(size, declared duration) -> decode frames to float planar (PyAV's converter, rate
unchanged) -> downmix to mono -> resample with a streaming soxr resampler. The
stream is checked against the duration limit while decoding, so a file whose header
lies (or has no duration) never grows an unbounded buffer.

Headerless PCM is decoded when the caller describes it with :class:`RawFormat`.
Decoder errors are translated into :class:`stts.errors.AudioError` subclasses here.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import av
import av.error
import numpy as np
import numpy.typing as npt
import soxr

from stts.errors import (
    AudioTooLarge,
    AudioTooLong,
    CorruptAudio,
    EmptyAudio,
    UnsupportedAudio,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
"""Every engine receives audio at this rate, mono, float32 in [-1, 1]."""

AudioArray = npt.NDArray[np.float32]
AudioSource = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO

RawEncoding = Literal["s16le", "s32le", "f32le", "u8"]
_RAW_DTYPES: dict[str, tuple[str, float, float]] = {
    # encoding: (numpy dtype, offset, scale) so that float = (x - offset) / scale
    "s16le": ("<i2", 0.0, 32768.0),
    "s32le": ("<i4", 0.0, 2147483648.0),
    "f32le": ("<f4", 0.0, 1.0),
    "u8": ("u1", 128.0, 128.0),
}

# WAV writers that stream (sox, ffmpeg to a pipe) leave these sizes in the header.
_WAV_UNKNOWN_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF}
_DECODE_CHUNK_SAMPLES = 1 << 16


@dataclass(frozen=True, slots=True)
class AudioLimits:
    """Per-request bounds: bytes in, seconds of audio decoded."""

    max_bytes: int = 100 * 1024 * 1024
    max_duration_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class RawFormat:
    """Describes headerless PCM: the caller must say what the bytes are."""

    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    encoding: RawEncoding = "s16le"

    def __post_init__(self) -> None:
        if not 1_000 <= self.sample_rate <= 384_000:
            raise UnsupportedAudio(f"raw PCM sample rate {self.sample_rate} Hz is out of range")
        if not 1 <= self.channels <= 32:
            raise UnsupportedAudio(f"raw PCM channel count {self.channels} is out of range")
        if self.encoding not in _RAW_DTYPES:
            raise UnsupportedAudio(
                f"raw PCM encoding {self.encoding!r} is not one of {sorted(_RAW_DTYPES)}"
            )


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What the input was, for logs and metrics."""

    container: str
    codec: str
    sample_rate: int
    channels: int
    duration: float


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    """16 kHz mono float32 samples plus a description of the original."""

    samples: AudioArray
    info: AudioInfo

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / SAMPLE_RATE


def decode_audio(
    source: AudioSource,
    *,
    raw: RawFormat | None = None,
    limits: AudioLimits | None = None,
) -> DecodedAudio:
    """Decode bytes, a path or a binary file object to 16 kHz mono float32."""
    limits = limits or AudioLimits()
    data = _read_bounded(source, limits.max_bytes)
    if not data:
        raise EmptyAudio("the audio is empty (0 bytes)")
    if raw is not None:
        return _decode_raw(data, raw, limits)
    return _decode_container(data, limits)


def _read_bounded(source: AudioSource, max_bytes: int) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise UnsupportedAudio(f"no such file: {path.name}") from exc
        if size > max_bytes:
            raise AudioTooLarge(f"the audio is {size} bytes; the limit is {max_bytes} bytes")
        if path.is_dir():
            raise UnsupportedAudio(f"{path.name} is a directory, not an audio file")
        data = path.read_bytes()
    else:
        # Read one byte past the limit so an oversized stream is refused without reading it all.
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise AudioTooLarge(f"the audio is larger than the limit of {max_bytes} bytes")
    return data


def _decode_raw(data: bytes, fmt: RawFormat, limits: AudioLimits) -> DecodedAudio:
    dtype, offset, scale = _RAW_DTYPES[fmt.encoding]
    frame_bytes = np.dtype(dtype).itemsize * fmt.channels
    if len(data) % frame_bytes:
        raise CorruptAudio(
            f"raw PCM length {len(data)} is not a multiple of the frame size {frame_bytes} "
            f"({fmt.encoding}, {fmt.channels} channel(s))"
        )
    seconds = len(data) / frame_bytes / fmt.sample_rate
    _check_duration(seconds, limits, declared=False)
    pcm = np.frombuffer(data, dtype=dtype).reshape(-1, fmt.channels)
    mono = pcm.mean(axis=1, dtype=np.float32) if fmt.channels > 1 else pcm[:, 0].astype(np.float32)
    if offset or scale != 1.0:
        mono = (mono - np.float32(offset)) / np.float32(scale)
    samples = _finish(_resample_whole(mono, fmt.sample_rate))
    info = AudioInfo("raw", fmt.encoding, fmt.sample_rate, fmt.channels, seconds)
    return DecodedAudio(samples, info)


def _decode_container(data: bytes, limits: AudioLimits) -> DecodedAudio:
    declared_wav = _wav_declared_seconds(data)
    if declared_wav is not None:
        _check_duration(declared_wav, limits, declared=True)
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise UnsupportedAudio(
            "the file is not in an audio format stts can read "
            "(supported: wav, flac, mp3, ogg/vorbis, opus, m4a/aac, webm, raw PCM)"
        ) from exc
    with container:
        if not container.streams.audio:
            raise UnsupportedAudio("the file contains no audio stream")
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        if declared is not None:
            _check_duration(declared, limits, declared=True)
        info_rate = stream.codec_context.sample_rate or 0
        channels = stream.codec_context.channels or 0
        chunks = list(_resampled_chunks(container, stream, limits))
        codec = stream.codec_context.name
        fmt_name = container.format.name
    samples = _finish(np.concatenate(chunks) if chunks else np.zeros(0, np.float32))
    if samples.size == 0:
        raise EmptyAudio("the audio contains no samples")
    duration = len(samples) / SAMPLE_RATE
    if declared_wav is not None and duration < declared_wav * 0.98 - 0.05:
        raise CorruptAudio(
            f"the WAV file is truncated: its header declares {declared_wav:.2f} s "
            f"but it holds {duration:.2f} s"
        )
    if declared is not None and fmt_name == "flac" and duration < declared * 0.98 - 0.05:
        raise CorruptAudio(
            f"the FLAC file is truncated: its header declares {declared:.2f} s "
            f"but it holds {duration:.2f} s"
        )
    return DecodedAudio(samples, AudioInfo(fmt_name, codec, info_rate, channels, duration))


def _declared_seconds(
    container: av.container.InputContainer, stream: av.AudioStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _wav_declared_seconds(data: bytes) -> float | None:
    """Duration the RIFF header claims; FFmpeg silently clamps it to the file size."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    # Walk at most a few chunks: fmt and data come first in any sane file.
    for _ in range(16):
        if pos + 8 > len(data):
            return None
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        if chunk_id == b"fmt " and pos + 20 <= len(data):
            (byte_rate,) = struct.unpack_from("<I", data, pos + 8 + 8)
        elif chunk_id == b"data":
            if size in _WAV_UNKNOWN_SIZES or byte_rate <= 0:
                return None
            return float(size) / float(byte_rate)
        pos += 8 + size + (size & 1)
    return None


def _check_duration(seconds: float, limits: AudioLimits, *, declared: bool) -> None:
    if seconds > limits.max_duration_s:
        what = "its header declares" if declared else "it is"
        raise AudioTooLong(
            f"the audio is too long: {what} {seconds:.1f} s; "
            f"the limit is {limits.max_duration_s:.0f} s"
        )


def _resampled_chunks(
    container: av.container.InputContainer, stream: av.AudioStream, limits: AudioLimits
) -> Iterator[AudioArray]:
    """Mono 16 kHz chunks, resampled incrementally; stops at the duration limit."""
    resampler: soxr.ResampleStream | None = None
    in_rate = 0
    total_in = 0
    try:
        for mono, rate in _mono_frames(container, stream):
            if resampler is None:
                in_rate = rate
                if rate != SAMPLE_RATE:
                    resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
            elif rate != in_rate:
                raise CorruptAudio("the sample rate changes in the middle of the stream")
            total_in += len(mono)
            _check_duration(total_in / in_rate, limits, declared=False)
            if resampler is None:
                yield mono
            else:
                out = resampler.resample_chunk(mono)
                if out.size:
                    yield out
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield tail
    except av.error.FFmpegError as exc:
        raise CorruptAudio(f"the audio could not be decoded: {_ffmpeg_reason(exc)}") from exc


def _mono_frames(
    container: av.container.InputContainer, stream: av.AudioStream
) -> Iterator[tuple[AudioArray, int]]:
    """Float mono samples per decoded frame, at the stream's own rate."""
    # Only the sample format is converted here (to planar float); the rate is soxr's job.
    converter = av.AudioResampler(format="fltp")
    for frame in container.decode(stream):
        rate = frame.sample_rate
        for out in converter.resample(frame):
            planes = out.to_ndarray()
            yield (
                (planes.mean(axis=0, dtype=np.float32) if planes.shape[0] > 1 else planes[0]),
                rate,
            )


def _resample_whole(mono: AudioArray, rate: int) -> AudioArray:
    if rate == SAMPLE_RATE:
        return mono
    out: AudioArray = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return out


def _finish(samples: AudioArray) -> AudioArray:
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if not np.all(np.isfinite(samples)):
        raise CorruptAudio("the audio contains NaN or infinite samples")
    # Float sources may exceed full scale; engines expect [-1, 1].
    np.clip(samples, -1.0, 1.0, out=samples)
    return samples


_SILENCE_FRAME = 400  # 25 ms at 16 kHz: short enough that one word's loudest frame counts
_SILENCE_BLOCK = _SILENCE_FRAME * 4096  # samples per numpy pass: bounded temporaries


def is_silent(samples: AudioArray, threshold_dbfs: float = -60.0) -> bool:
    """True when no 25 ms frame's RMS, its DC offset removed, reaches ``threshold_dbfs``."""
    # RMS is relative to full scale (1.0). Speech's loudest frames sit 20-50 dB above -60
    # dBFS; digital zeros, dither, hum-free DC offsets and clipped constants sit below.
    limit = float(10.0 ** (threshold_dbfs / 20.0))
    for start in range(0, len(samples), _SILENCE_BLOCK):
        block = samples[start : start + _SILENCE_BLOCK]
        whole = len(block) // _SILENCE_FRAME * _SILENCE_FRAME
        frames = [block[:whole].reshape(-1, _SILENCE_FRAME)] if whole else []
        if whole < len(block):
            frames.append(block[whole:].reshape(1, -1))
        for group in frames:
            deviation = group - group.mean(axis=1, keepdims=True, dtype=np.float32)
            power = np.einsum("ij,ij->i", deviation, deviation) / group.shape[1]
            if float(power.max()) >= limit * limit:
                return False
    return True


def _ffmpeg_reason(exc: av.error.FFmpegError) -> str:
    # Only FFmpeg's own short reason: never a file name or a path.
    text = getattr(exc, "strerror", None) or type(exc).__name__
    return str(text)
