"""Raw audio bytes as live streams send them -> 16 kHz mono float32, piece by piece.

Live faces (the realtime WebSocket) receive headerless audio in small pieces: 16-bit
little-endian PCM at some rate, or G.711 μ-law / A-law at 8 kHz (telephony). A
:class:`PcmConverter` turns each piece into the 16 kHz float32 the service takes as
it arrives, with one ``soxr`` resampler per stream so pieces join without clicks, and a
sample split across two pieces (an odd byte count) carried to the next one. G.711 is
decoded with lookup tables (``audioop`` is deprecated and gone in Python 3.13).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import soxr

from stts.audio import SAMPLE_RATE, AudioArray

Encoding = Literal["pcm16", "pcmu", "pcma"]

PCM_RATES = (8000, 16000, 24000, 48000)
"""Rates accepted for 16-bit PCM."""
G711_RATE = 8000


def _ulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    # A-law's sign bit set means positive (the opposite of μ-law).
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


ULAW_TO_PCM16 = _ulaw_table()
"""G.711 μ-law byte -> 16-bit linear sample."""
ALAW_TO_PCM16 = _alaw_table()
"""G.711 A-law byte -> 16-bit linear sample."""
_ULAW_FLOAT = (ULAW_TO_PCM16 / 32768.0).astype(np.float32)
_ALAW_FLOAT = (ALAW_TO_PCM16 / 32768.0).astype(np.float32)


def bytes_per_second(encoding: Encoding, rate: int) -> int:
    """How many bytes one second of this audio takes."""
    return rate * (2 if encoding == "pcm16" else 1)


class PcmConverter:
    """One stream's incoming bytes -> 16 kHz mono float32, incrementally."""

    def __init__(self, encoding: Encoding, rate: int) -> None:
        if encoding == "pcm16" and rate not in PCM_RATES:
            raise ValueError(f"unsupported PCM rate {rate}")
        if encoding != "pcm16":
            rate = G711_RATE
        self.encoding: Encoding = encoding
        self.rate = rate
        self._odd = b""  # half a 16-bit sample left over from the previous piece
        self._resampler = (
            None
            if rate == SAMPLE_RATE
            else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        )

    def _samples(self, data: bytes) -> AudioArray:
        if self.encoding == "pcmu":
            return _ULAW_FLOAT[np.frombuffer(data, np.uint8)]
        if self.encoding == "pcma":
            return _ALAW_FLOAT[np.frombuffer(data, np.uint8)]
        if self._odd:
            data = self._odd + data
        usable = len(data) // 2 * 2
        self._odd = data[usable:]
        return np.frombuffer(data[:usable], "<i2").astype(np.float32) / 32768.0

    def convert(self, data: bytes) -> AudioArray:
        """The 16 kHz samples this piece completes (a resampler keeps a few ms back)."""
        samples = self._samples(data)
        if self._resampler is None:
            return samples
        return np.asarray(self._resampler.resample_chunk(samples, last=False), np.float32)

    def flush(self) -> AudioArray:
        """End of the stream so far: what the resampler still holds; ready for more after."""
        self._odd = b""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        tail = np.asarray(
            self._resampler.resample_chunk(np.zeros(0, np.float32), last=True), np.float32
        )
        self._resampler.clear()
        return tail
