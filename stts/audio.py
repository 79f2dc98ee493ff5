"""Decode any common audio to 16 kHz mono float32, once, at the edge.

One public function, :func:`decode_audio`, built from small private steps:
open the container (PyAV, no ffmpeg subprocess) -> refuse cheaply from the header
(size, declared duration) -> demux and decode packet by packet -> each frame to float,
NaN/inf refused and clipped to [-1, 1] before anything mixes or filters it -> downmix to
mono -> resample with a streaming soxr resampler -> write into one growing buffer, sized
from the header, so the peak memory is about the final array (not chunks plus their
concatenation). The stream is checked against the duration limit while decoding, so a
file whose header lies (or has no duration) never grows an unbounded buffer, and a
caller's ``cancel`` check is polled for every packet.

Damaged files follow one rule, for every container: decode what is decodable. A packet
the codec rejects is skipped; undecodable data the demuxer stops on (trailing junk, a
cut) ends the audio there; a file shorter than its exact header (WAV, FLAC, Ogg) keeps
what it holds. Each is reported in :attr:`DecodedAudio.warnings`. Only a file in which
nothing decodes is refused (:class:`~stts.errors.CorruptAudio`).

Headerless PCM is decoded when the caller describes it with :class:`RawFormat`; a NumPy
array (what faster-whisper and openai-whisper take) is such PCM already in memory.
Decoder errors are translated into :class:`stts.errors.AudioError` subclasses here;
:func:`is_silent` tells digital silence from sound without a model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import av
import av.error
import numpy as np
import numpy.typing as npt
import soxr

from stts.errors import (
    AudioTooLarge,
    AudioTooLong,
    Cancelled,
    CorruptAudio,
    EmptyAudio,
    UnsupportedAudio,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
"""Every engine receives audio at this rate, mono, float32 in [-1, 1]."""

AudioArray = npt.NDArray[np.float32]
AudioSource = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO
CancelCheck = Callable[[], bool]
"""Returns True once the caller gave up (client gone, deadline passed, shutting down)."""

RawEncoding = Literal["s16le", "s32le", "f32le", "u8"]
_RAW_DTYPES: dict[str, tuple[str, str]] = {
    # encoding: (numpy dtype, the FFmpeg sample format it is)
    "s16le": ("<i2", "s16"),
    "s32le": ("<i4", "s32"),
    "f32le": ("<f4", "flt"),
    "u8": ("u1", "u8"),
}
# Integer sample formats: float = (x - offset) / scale. Float formats are used as they are.
_INT_SCALES: dict[str, tuple[float, float]] = {
    "u8": (128.0, 128.0),
    "s16": (0.0, 32768.0),
    "s32": (0.0, 2147483648.0),
    "s64": (0.0, 9223372036854775808.0),
}
_FLOAT_FORMATS = frozenset({"flt", "dbl"})

# WAV writers that stream (sox, ffmpeg to a pipe, arecord to stdout) leave these sizes in
# the header: the data runs to the end of the file.
_WAV_UNKNOWN_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000}
# Containers whose declared length is exact (not estimated from a bitrate).
_EXACT_LENGTH = frozenset({"wav", "flac", "ogg"})
_RAW_BLOCK_FRAMES = 1 << 16
# Initial capacity when nothing declares a length; grown by a factor as needed.
_UNKNOWN_LENGTH_S = 30.0
_GROWTH = 1.5
_BATCH_SAMPLES = 1 << 13
_EMPTY: AudioArray = np.zeros(0, np.float32)


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
    """16 kHz mono float32 samples plus a description of the original.

    ``warnings`` says what of a damaged file was skipped (short ASCII sentences, one
    per problem; empty for a clean file), for the caller to pass on.
    """

    samples: AudioArray
    info: AudioInfo
    warnings: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / SAMPLE_RATE


def decode_audio(
    source: AudioSource | npt.NDArray[Any],
    *,
    raw: RawFormat | None = None,
    limits: AudioLimits | None = None,
    cancel: CancelCheck | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> DecodedAudio:
    """Decode bytes, a path or a binary file object to 16 kHz mono float32; a NumPy array
    is taken as samples at ``sample_rate`` (mono, or ``(frames, channels)``)."""
    limits = limits or AudioLimits()
    _check_cancel(cancel)
    if isinstance(source, np.ndarray):
        return _decode_array(source, sample_rate, limits, cancel)
    data = _read_bounded(source, limits.max_bytes)
    if not data:
        raise EmptyAudio("the audio is empty (0 bytes)")
    if raw is not None:
        return _decode_raw(data, raw, limits, cancel)
    return _decode_container(data, limits, cancel)


def _check_cancel(cancel: CancelCheck | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("decoding was stopped")


def _read_bounded(source: AudioSource, max_bytes: int) -> bytes | memoryview:
    """The input's bytes; a bytes object, bytearray or memoryview is not copied."""
    data: bytes | memoryview
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, bytearray | memoryview):
        data = memoryview(source).cast("B")
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


def _decode_raw(
    data: bytes | memoryview, fmt: RawFormat, limits: AudioLimits, cancel: CancelCheck | None
) -> DecodedAudio:
    dtype, sample_format = _RAW_DTYPES[fmt.encoding]
    frame_bytes = np.dtype(dtype).itemsize * fmt.channels
    if len(data) % frame_bytes:
        raise CorruptAudio(
            f"raw PCM length {len(data)} is not a multiple of the frame size {frame_bytes} "
            f"({fmt.encoding}, {fmt.channels} channel(s))"
        )
    seconds = len(data) / frame_bytes / fmt.sample_rate
    _check_duration(seconds, limits, declared=False)
    # A view on the caller's bytes, converted a block at a time: no whole-input copies.
    pcm = np.frombuffer(data, dtype=dtype).reshape(-1, fmt.channels)

    def blocks() -> Iterator[tuple[AudioArray, int]]:
        for start in range(0, len(pcm), _RAW_BLOCK_FRAMES):
            _check_cancel(cancel)
            planes = _float_planes(pcm[start : start + _RAW_BLOCK_FRAMES].T, sample_format)
            yield _downmix(planes), fmt.sample_rate

    out = _SampleBuffer(seconds, limits)
    _resample_into(blocks(), out, limits, _Damage())
    info = AudioInfo("raw", fmt.encoding, fmt.sample_rate, fmt.channels, seconds)
    return DecodedAudio(out.result(), info)


def _decode_container(
    data: bytes | memoryview, limits: AudioLimits, cancel: CancelCheck | None
) -> DecodedAudio:
    warnings: list[str] = []
    wav = _wav_data(data)
    if wav is not None:
        _check_duration(wav.seconds, limits, declared=True)
        if wav.truncated:
            warnings.append(
                f"the WAV file is truncated: its header declares {wav.declared:.2f} s "
                f"but it holds {wav.seconds:.2f} s"
            )
    try:
        # BytesIO shares a bytes object's buffer; only a memoryview is copied, once.
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise UnsupportedAudio(
            "the file is not in an audio format stts can read "
            "(supported: wav, flac, mp3, ogg/vorbis, opus, m4a/aac, webm, raw PCM)"
        ) from exc
    damage = _Damage()
    with container:
        if not container.streams.audio:
            raise UnsupportedAudio("the file contains no audio stream")
        stream = container.streams.audio[0]
        if stream.codec_context is None:  # a codec FFmpeg has no decoder for
            raise UnsupportedAudio("the file's audio codec is not one stts can decode")
        fmt_name = container.format.name
        declared = wav.seconds if wav is not None else _declared_seconds(container, stream)
        if declared is not None:
            _check_duration(declared, limits, declared=True)
        info_rate = stream.codec_context.sample_rate or 0
        channels = stream.codec_context.channels or 0
        codec = stream.codec_context.name
        out = _SampleBuffer(declared, limits)
        frames = _tolerant_frames(container, stream, damage, cancel)
        _resample_into(_mono_frames(frames), out, limits, damage)
    samples = out.result()
    if samples.size == 0:
        if damage:
            raise CorruptAudio(f"nothing in the file could be decoded: {damage}")
        if declared:
            raise CorruptAudio(
                f"nothing in the file could be decoded: its header declares {declared:.2f} s"
            )
        raise EmptyAudio("the audio contains no samples")
    duration = len(samples) / SAMPLE_RATE
    if damage:
        warnings.append(str(damage))
    # Shorter than an exact header says (a cut, or pages the demuxer dropped): say so.
    # MP3 and AAC lengths may be estimated from the bitrate, so they are not compared.
    if (
        declared is not None
        and fmt_name in _EXACT_LENGTH
        and duration < declared * 0.98 - 0.05
        and not (wav is not None and wav.truncated)
    ):
        warnings.append(
            f"decoded {duration:.2f} s of the {declared:.2f} s its header declares: "
            "the rest is missing or damaged"
        )
    if warnings:
        logger.info("decoded what was decodable of a damaged file: %s", "; ".join(warnings))
    info = AudioInfo(fmt_name, codec, info_rate, channels, duration)
    return DecodedAudio(samples, info, tuple(warnings))


def _declared_seconds(
    container: av.container.InputContainer, stream: av.AudioStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


@dataclass(frozen=True, slots=True)
class _WavData:
    seconds: float  # what the file holds (the header's size, or the bytes up to the end)
    declared: float  # what the header's data size says
    truncated: bool  # the header's size runs past the end and is no streaming placeholder


def _wav_data(data: bytes | memoryview) -> _WavData | None:
    """The RIFF data chunk's length; FFmpeg silently clamps it to the file size."""
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
            if byte_rate <= 0:
                return None
            present = len(data) - (pos + 8)
            # A size past the end is a streaming writer's placeholder or a cut file:
            # either way the file's own size is what there is to decode.
            held = min(size, present) if size not in _WAV_UNKNOWN_SIZES else present
            return _WavData(
                seconds=held / byte_rate,
                declared=size / byte_rate,
                truncated=size > present and size not in _WAV_UNKNOWN_SIZES,
            )
        pos += 8 + size + (size & 1)
    return None


def _check_duration(seconds: float, limits: AudioLimits, *, declared: bool) -> None:
    if seconds > limits.max_duration_s:
        what = "its header declares" if declared else "it is"
        raise AudioTooLong(
            f"the audio is too long: {what} {seconds:.1f} s; "
            f"the limit is {limits.max_duration_s:.0f} s"
        )


@dataclass(slots=True)
class _Damage:
    """What a tolerant decode skipped, for :attr:`DecodedAudio.warnings`."""

    bad_packets: int = 0
    other_rate_frames: int = 0
    stopped_at: float | None = None  # seconds decoded when the demuxer gave up
    reason: str = ""

    def __bool__(self) -> bool:
        return bool(self.bad_packets or self.other_rate_frames or self.stopped_at is not None)

    def __str__(self) -> str:
        parts = []
        if self.bad_packets:
            parts.append(f"skipped {self.bad_packets} undecodable packet(s)")
        if self.other_rate_frames:
            parts.append(f"skipped {self.other_rate_frames} frame(s) at another sample rate")
        if self.stopped_at is not None:
            parts.append(
                f"stopped at undecodable data after {self.stopped_at:.2f} s ({self.reason})"
            )
        return "; ".join(parts)


def _tolerant_frames(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    damage: _Damage,
    cancel: CancelCheck | None,
) -> Iterator[av.AudioFrame]:
    """Decoded frames: a packet the codec rejects is skipped, a demuxer error ends the stream."""
    packets = container.demux(stream)
    decoded = 0.0
    while True:
        _check_cancel(cancel)
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            damage.stopped_at, damage.reason = decoded, _ffmpeg_reason(exc)
            break
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            damage.bad_packets += 1
            continue
        for frame in frames:
            if isinstance(frame, av.AudioFrame):
                decoded += frame.samples / (frame.sample_rate or 1)
                yield frame
    with contextlib.suppress(av.error.FFmpegError):  # drain what the decoder still holds
        yield from stream.codec_context.decode(None)


_ARRAY_ENCODINGS: dict[str, RawEncoding] = {
    "float32": "f32le",
    "int16": "s16le",
    "int32": "s32le",
    "uint8": "u8",
}


def _decode_array(
    samples: npt.NDArray[Any], rate: int, limits: AudioLimits, cancel: CancelCheck | None
) -> DecodedAudio:
    """An in-memory array as raw PCM: float in [-1, 1] (float64 is narrowed), int16,
    int32 or uint8; 1-D mono or ``(frames, channels)`` as soundfile reads it."""
    if samples.ndim not in (1, 2) or (samples.ndim == 2 and not 1 <= samples.shape[1] <= 32):
        raise UnsupportedAudio(
            f"an audio array must be 1-D (mono) or (frames, channels) with at most 32 "
            f"channels; got shape {samples.shape}"
        )
    given = samples.dtype.name
    if samples.dtype.kind == "f" and samples.dtype != np.float32:
        samples = samples.astype(np.float32)
    encoding = _ARRAY_ENCODINGS.get(samples.dtype.name)
    if encoding is None:
        raise UnsupportedAudio(
            f"an audio array of {samples.dtype.name} is not supported: "
            "use float32 in [-1, 1], int16, int32 or uint8"
        )
    if samples.size == 0:
        raise EmptyAudio("the audio is empty (0 samples)")
    fmt = RawFormat(rate, 1 if samples.ndim == 1 else samples.shape[1], encoding)
    pcm = np.ascontiguousarray(samples, samples.dtype.newbyteorder("<"))
    decoded = _decode_raw(pcm.data.cast("B"), fmt, limits, cancel)
    info = AudioInfo("array", given, rate, fmt.channels, decoded.info.duration)
    return DecodedAudio(decoded.samples, info)


def _mono_frames(frames: Iterable[av.AudioFrame]) -> Iterator[tuple[AudioArray, int]]:
    """Float mono samples per decoded frame, at the stream's own rate."""
    for frame in frames:
        planes = frame.to_ndarray()
        if not frame.format.is_planar:  # packed: (1, samples * channels)
            planes = planes.reshape(-1, max(len(frame.layout.channels), 1)).T
        if planes.size:
            yield _downmix(_float_planes(planes, frame.format.name.rstrip("p"))), frame.sample_rate


def _float_planes(planes: npt.NDArray[np.generic], sample_format: str) -> AudioArray:
    """(channels, samples) of any sample format -> float32 in [-1, 1]."""
    if sample_format in _FLOAT_FORMATS:
        # Clip each channel before it is mixed: a channel at 1000 x full scale must not
        # drown the others. Mono is checked and clipped a block at a time before the
        # resampler instead (see _resample_into), which is the same and cheaper.
        if planes.shape[0] > 1:
            planes = _within_full_scale(planes)
        return planes.astype(np.float32, copy=False)
    offset, scale = _INT_SCALES[sample_format]
    out = planes.astype(np.float32)
    if offset:
        out -= np.float32(offset)
    out *= np.float32(1.0 / scale)
    return out


def _within_full_scale(samples: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Refuse NaN and infinity, clip to [-1, 1]: float formats may hold any value."""
    low, high = samples.min(), samples.max()  # NaN propagates through min and max
    if not (np.isfinite(low) and np.isfinite(high)):
        raise CorruptAudio("the audio contains NaN or infinite samples")
    if low < -1.0 or high > 1.0:
        clipped: npt.NDArray[Any] = np.clip(samples, -1.0, 1.0)
        return clipped
    return samples


def _downmix(planes: AudioArray) -> AudioArray:
    if planes.shape[0] == 1:
        mono: AudioArray = planes[0]
        return mono
    mixed: AudioArray = planes.mean(axis=0, dtype=np.float32)
    return mixed


class _SampleBuffer:
    """One float32 array that grows in place: no list of chunks to concatenate at the end.

    Sized from the declared length (a little over), grown geometrically when the header
    lies or is absent, trimmed at the end; ``ndarray.resize`` reallocates in place, which
    for large arrays remaps pages instead of copying them.
    """

    def __init__(self, declared_s: float | None, limits: AudioLimits) -> None:
        seconds = _UNKNOWN_LENGTH_S if declared_s is None else declared_s * 1.01 + 0.1
        seconds = min(seconds, limits.max_duration_s * 1.01 + 1.0)
        self._data: AudioArray = np.empty(int(seconds * SAMPLE_RATE) + 1, np.float32)
        self._size = 0

    def append(self, chunk: AudioArray) -> None:
        end = self._size + len(chunk)
        if end > len(self._data):
            self._data.resize(max(end, int(len(self._data) * _GROWTH)), refcheck=False)
        view = self._data[self._size : end]
        view[:] = chunk
        # Resampling a clipped signal overshoots a little (Gibbs): engines expect [-1, 1].
        np.clip(view, -1.0, 1.0, out=view)
        self._size = end

    def result(self) -> AudioArray:
        self._data.resize(self._size, refcheck=False)
        return self._data


def _resample_into(
    pieces: Iterable[tuple[AudioArray, int]],
    out: _SampleBuffer,
    limits: AudioLimits,
    damage: _Damage,
) -> None:
    """Resample mono pieces to 16 kHz into ``out``; stops at the duration limit."""
    resampler: soxr.ResampleStream | None = None
    in_rate = 0
    total_in = 0
    # Codec frames are small (20 ms of Opus): gather ~1/4 s before the per-call costs of
    # the resampler and the buffer, which would otherwise dominate a long file.
    pending: list[AudioArray] = []
    pending_len = 0

    def flush(last: bool = False) -> None:
        nonlocal pending_len
        block = pending[0] if len(pending) == 1 else np.concatenate(pending or [_EMPTY])
        # At the edge, before the resampler: a filter fed 1000 x full scale rings at 1000 x.
        block = _within_full_scale(block) if block.size else block
        pending.clear()
        pending_len = 0
        out.append(block if resampler is None else resampler.resample_chunk(block, last=last))

    for mono, rate in pieces:
        if not in_rate:
            in_rate = rate
            if rate != SAMPLE_RATE:
                resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
        elif rate != in_rate:  # a damaged header in the middle of the stream
            damage.other_rate_frames += 1
            continue
        total_in += len(mono)
        _check_duration(total_in / in_rate, limits, declared=False)
        pending.append(mono)
        pending_len += len(mono)
        if pending_len >= _BATCH_SAMPLES:
            flush()
    if pending or resampler is not None:
        flush(last=True)


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
