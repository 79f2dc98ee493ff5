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

One concern a module: :mod:`.base` (the types), :mod:`.limits` (size, duration, cancel),
:mod:`.container` (PyAV, damaged files), :mod:`.raw` (headerless PCM, NumPy arrays),
:mod:`.samples` (to float, downmix, resample into one buffer), :mod:`.silence`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from stts.audio.base import (
    SAMPLE_RATE,
    AudioArray,
    AudioInfo,
    AudioLimits,
    AudioSource,
    CancelCheck,
    DecodedAudio,
    RawEncoding,
    RawFormat,
)
from stts.audio.container import decode_container
from stts.audio.limits import check_cancel, read_bounded
from stts.audio.raw import decode_array, decode_raw
from stts.audio.silence import is_silent
from stts.errors import EmptyAudio

__all__ = [
    "SAMPLE_RATE",
    "AudioArray",
    "AudioInfo",
    "AudioLimits",
    "AudioSource",
    "CancelCheck",
    "DecodedAudio",
    "RawEncoding",
    "RawFormat",
    "decode_audio",
    "is_silent",
]


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
    check_cancel(cancel)
    if isinstance(source, np.ndarray):
        return decode_array(source, sample_rate, limits, cancel)
    data = read_bounded(source, limits.max_bytes)
    if not data:
        raise EmptyAudio("the audio is empty (0 bytes)")
    if raw is not None:
        return decode_raw(data, raw, limits, cancel)
    return decode_container(data, limits, cancel)
