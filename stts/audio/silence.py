"""Digital silence told from sound without a model."""

from __future__ import annotations

import numpy as np

from stts.audio.base import AudioArray

_SILENCE_FRAME = 400  # 25 ms at 16 kHz: short enough that one word's loudest frame counts
_SILENCE_BLOCK = _SILENCE_FRAME * 4096  # samples per numpy pass: bounded temporaries


def frame_power(samples: AudioArray) -> np.ndarray:
    """Mean power of each 25 ms frame, its DC offset removed (a shorter last frame
    counts as one frame)."""
    whole = len(samples) // _SILENCE_FRAME * _SILENCE_FRAME
    groups = [samples[:whole].reshape(-1, _SILENCE_FRAME)] if whole else []
    if whole < len(samples):
        groups.append(samples[whole:].reshape(1, -1))
    powers = [np.zeros(0, np.float32)]
    for group in groups:
        deviation = group - group.mean(axis=1, keepdims=True, dtype=np.float32)
        powers.append(np.einsum("ij,ij->i", deviation, deviation) / group.shape[1])
    power: np.ndarray = np.concatenate(powers)
    return power


def is_silent(samples: AudioArray, threshold_dbfs: float = -60.0) -> bool:
    """True when no 25 ms frame's RMS, its DC offset removed, reaches ``threshold_dbfs``."""
    # RMS is relative to full scale (1.0). Speech's loudest frames sit 20-50 dB above -60
    # dBFS; digital zeros, dither, hum-free DC offsets and clipped constants sit below.
    limit = float(10.0 ** (threshold_dbfs / 20.0))
    for start in range(0, len(samples), _SILENCE_BLOCK):
        power = frame_power(samples[start : start + _SILENCE_BLOCK])
        if len(power) and float(power.max()) >= limit * limit:
            return False
    return True
