"""Decoded samples to 16 kHz mono float32: sample formats to float, NaN refused and clipping,
downmix, streaming resampling into one growing buffer, and what a tolerant decode skipped."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from stts.audio.base import SAMPLE_RATE, AudioArray, AudioLimits
from stts.audio.limits import check_duration
from stts.errors import CorruptAudio

# Integer sample formats: float = (x - offset) / scale. Float formats are used as they are.
_INT_SCALES: dict[str, tuple[float, float]] = {
    "u8": (128.0, 128.0),
    "s16": (0.0, 32768.0),
    "s32": (0.0, 2147483648.0),
    "s64": (0.0, 9223372036854775808.0),
}
_FLOAT_FORMATS = frozenset({"flt", "dbl"})

# Initial capacity when nothing declares a length; grown by a factor as needed.
_UNKNOWN_LENGTH_S = 30.0
_GROWTH = 1.5
_BATCH_SAMPLES = 1 << 13
_EMPTY: AudioArray = np.zeros(0, np.float32)


@dataclass(slots=True)
class Damage:
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


def float_planes(planes: npt.NDArray[np.generic], sample_format: str) -> AudioArray:
    """(channels, samples) of any sample format -> float32 in [-1, 1]."""
    if sample_format in _FLOAT_FORMATS:
        # Clip each channel before it is mixed: a channel at 1000 x full scale must not
        # drown the others. Mono is checked and clipped a block at a time before the
        # resampler instead (see resample_into), which is the same and cheaper.
        if planes.shape[0] > 1:
            planes = within_full_scale(planes)
        return planes.astype(np.float32, copy=False)
    offset, scale = _INT_SCALES[sample_format]
    out = planes.astype(np.float32)
    if offset:
        out -= np.float32(offset)
    out *= np.float32(1.0 / scale)
    return out


def within_full_scale(samples: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Refuse NaN and infinity, clip to [-1, 1]: float formats may hold any value."""
    low, high = samples.min(), samples.max()  # NaN propagates through min and max
    if not (np.isfinite(low) and np.isfinite(high)):
        raise CorruptAudio("the audio contains NaN or infinite samples")
    if low < -1.0 or high > 1.0:
        clipped: npt.NDArray[Any] = np.clip(samples, -1.0, 1.0)
        return clipped
    return samples


def downmix(planes: AudioArray) -> AudioArray:
    if planes.shape[0] == 1:
        mono: AudioArray = planes[0]
        return mono
    mixed: AudioArray = planes.mean(axis=0, dtype=np.float32)
    return mixed


class SampleBuffer:
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


def resample_into(
    pieces: Iterable[tuple[AudioArray, int]],
    out: SampleBuffer,
    limits: AudioLimits,
    damage: Damage,
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
        block = within_full_scale(block) if block.size else block
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
        check_duration(total_in / in_rate, limits, declared=False)
        pending.append(mono)
        pending_len += len(mono)
        if pending_len >= _BATCH_SAMPLES:
            flush()
    if pending or resampler is not None:
        flush(last=True)
