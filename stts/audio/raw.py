"""Headerless PCM, described by the caller, and in-memory NumPy arrays (PCM already)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from stts.audio.base import (
    RAW_DTYPES,
    AudioArray,
    AudioInfo,
    AudioLimits,
    CancelCheck,
    DecodedAudio,
    RawEncoding,
    RawFormat,
)
from stts.audio.limits import check_cancel, check_duration
from stts.audio.samples import Damage, SampleBuffer, downmix, float_planes, resample_into
from stts.errors import CorruptAudio, EmptyAudio, UnsupportedAudio

_RAW_BLOCK_FRAMES = 1 << 16


def decode_raw(
    data: bytes | memoryview, fmt: RawFormat, limits: AudioLimits, cancel: CancelCheck | None
) -> DecodedAudio:
    dtype, sample_format = RAW_DTYPES[fmt.encoding]
    frame_bytes = np.dtype(dtype).itemsize * fmt.channels
    if len(data) % frame_bytes:
        raise CorruptAudio(
            f"raw PCM length {len(data)} is not a multiple of the frame size {frame_bytes} "
            f"({fmt.encoding}, {fmt.channels} channel(s))"
        )
    seconds = len(data) / frame_bytes / fmt.sample_rate
    check_duration(seconds, limits, declared=False)
    # A view on the caller's bytes, converted a block at a time: no whole-input copies.
    pcm = np.frombuffer(data, dtype=dtype).reshape(-1, fmt.channels)

    def blocks() -> Iterator[tuple[AudioArray, int]]:
        for start in range(0, len(pcm), _RAW_BLOCK_FRAMES):
            check_cancel(cancel)
            planes = float_planes(pcm[start : start + _RAW_BLOCK_FRAMES].T, sample_format)
            yield downmix(planes), fmt.sample_rate

    out = SampleBuffer(seconds, limits)
    resample_into(blocks(), out, limits, Damage())
    info = AudioInfo("raw", fmt.encoding, fmt.sample_rate, fmt.channels, seconds)
    return DecodedAudio(out.result(), info)


_ARRAY_ENCODINGS: dict[str, RawEncoding] = {
    "float32": "f32le",
    "int16": "s16le",
    "int32": "s32le",
    "uint8": "u8",
}


def decode_array(
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
    decoded = decode_raw(pcm.data.cast("B"), fmt, limits, cancel)
    info = AudioInfo("array", given, rate, fmt.channels, decoded.info.duration)
    return DecodedAudio(decoded.samples, info)
