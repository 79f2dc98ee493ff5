"""What stts.audio takes and gives: the sample rate, limits, raw PCM's description and the
decoded result."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np
import numpy.typing as npt

from stts.errors import UnsupportedAudio

SAMPLE_RATE = 16_000
"""Every engine receives audio at this rate, mono, float32 in [-1, 1]."""

AudioArray = npt.NDArray[np.float32]
AudioSource = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO
CancelCheck = Callable[[], bool]
"""Returns True once the caller gave up (client gone, deadline passed, shutting down)."""

RawEncoding = Literal["s16le", "s32le", "f32le", "u8"]
RAW_DTYPES: dict[str, tuple[str, str]] = {
    # encoding: (numpy dtype, the FFmpeg sample format it is)
    "s16le": ("<i2", "s16"),
    "s32le": ("<i4", "s32"),
    "f32le": ("<f4", "flt"),
    "u8": ("u1", "u8"),
}


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
        if self.encoding not in RAW_DTYPES:
            raise UnsupportedAudio(
                f"raw PCM encoding {self.encoding!r} is not one of {sorted(RAW_DTYPES)}"
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
