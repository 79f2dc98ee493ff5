"""Containers (WAV, FLAC, MP3, Ogg, Opus, M4A, WebM...) through PyAV: refused cheaply from
the header, decoded packet by packet, damaged files decoded as far as they decode."""

from __future__ import annotations

import contextlib
import io
import logging
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import av
import av.error

from stts.audio.base import (
    SAMPLE_RATE,
    AudioArray,
    AudioInfo,
    AudioLimits,
    CancelCheck,
    DecodedAudio,
)
from stts.audio.limits import check_cancel, check_duration
from stts.audio.samples import Damage, SampleBuffer, downmix, float_planes, resample_into
from stts.errors import CorruptAudio, EmptyAudio, UnsupportedAudio

logger = logging.getLogger(__name__)

# WAV writers that stream (sox, ffmpeg to a pipe, arecord to stdout) leave these sizes in
# the header: the data runs to the end of the file.
_WAV_UNKNOWN_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000}
# Containers whose declared length is exact (not estimated from a bitrate).
_EXACT_LENGTH = frozenset({"wav", "flac", "ogg"})


def decode_container(
    data: bytes | memoryview, limits: AudioLimits, cancel: CancelCheck | None
) -> DecodedAudio:
    warnings: list[str] = []
    wav = _wav_data(data)
    if wav is not None:
        check_duration(wav.seconds, limits, declared=True)
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
    damage = Damage()
    with container:
        if not container.streams.audio:
            raise UnsupportedAudio("the file contains no audio stream")
        stream = container.streams.audio[0]
        if stream.codec_context is None:  # a codec FFmpeg has no decoder for
            raise UnsupportedAudio("the file's audio codec is not one stts can decode")
        fmt_name = container.format.name
        declared = wav.seconds if wav is not None else _declared_seconds(container, stream)
        if declared is not None:
            check_duration(declared, limits, declared=True)
        info_rate = stream.codec_context.sample_rate or 0
        channels = stream.codec_context.channels or 0
        codec = stream.codec_context.name
        out = SampleBuffer(declared, limits)
        frames = _tolerant_frames(container, stream, damage, cancel)
        resample_into(_mono_frames(frames), out, limits, damage)
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


def _tolerant_frames(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    damage: Damage,
    cancel: CancelCheck | None,
) -> Iterator[av.AudioFrame]:
    """Decoded frames: a packet the codec rejects is skipped, a demuxer error ends the stream."""
    packets = container.demux(stream)
    decoded = 0.0
    while True:
        check_cancel(cancel)
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


def _mono_frames(frames: Iterable[av.AudioFrame]) -> Iterator[tuple[AudioArray, int]]:
    """Float mono samples per decoded frame, at the stream's own rate."""
    for frame in frames:
        planes = frame.to_ndarray()
        if not frame.format.is_planar:  # packed: (1, samples * channels)
            planes = planes.reshape(-1, max(len(frame.layout.channels), 1)).T
        if planes.size:
            yield downmix(float_planes(planes, frame.format.name.rstrip("p"))), frame.sample_rate


def _ffmpeg_reason(exc: av.error.FFmpegError) -> str:
    # Only FFmpeg's own short reason: never a file name or a path.
    text = getattr(exc, "strerror", None) or type(exc).__name__
    return str(text)
