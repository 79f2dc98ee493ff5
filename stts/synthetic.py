"""Generated audio for tests and benchmarks: non-speech signals and long-form recordings.

Everything here is 16 kHz mono float32 built from a seeded generator, so a test and a
benchmark that ask for the same signal hear the same samples. Levels are RMS relative to
full scale (dBFS). Nothing here is used on the serving path.

- :func:`non_speech` names the set of issue 14: digital silence; white, pink and brown
  noise; 50/60 Hz hum with harmonics; DTMF; beeps; a music-like signal (chords in a
  rhythm); keyboard-like clicks.
- :func:`long_form` lays speech clips end to end with pauses, optionally over a noise
  floor and with a stretch of music in the middle, and says where each clip went.
- :func:`float_wav` writes any float samples as an IEEE-float WAV (values beyond full
  scale included), for the decoder's pathological cases.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16_000
Samples = npt.NDArray[np.float32]


def float_wav(channels: npt.NDArray[np.floating], rate: int) -> bytes:
    """WAVE_FORMAT_IEEE_FLOAT, any values (channels as rows, or one row)."""
    interleaved = np.ascontiguousarray(np.atleast_2d(channels).T, dtype="<f4")
    n = interleaved.shape[1]
    data = interleaved.tobytes()
    fmt = struct.pack("<HHIIHH", 3, n, rate, rate * 4 * n, 4 * n, 32)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def dbfs(samples: npt.NDArray[np.floating]) -> float:
    """RMS level relative to full scale (-inf for zeros)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def at_level(samples: npt.NDArray[np.floating], level_dbfs: float) -> Samples:
    """``samples`` scaled to an RMS of ``level_dbfs``."""
    rms = np.sqrt(np.mean(np.square(samples, dtype=np.float64)))
    gain = 10.0 ** (level_dbfs / 20.0) / rms if rms > 0 else 0.0
    return (samples * gain).astype(np.float32)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _coloured(n: int, exponent: float, seed: int) -> npt.NDArray[np.float64]:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(_rng(seed).standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    freqs[0] = freqs[1] if n > 1 else 1.0
    spectrum *= freqs ** (-exponent / 2.0)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def silence(seconds: float, seed: int = 0) -> Samples:
    """Digital zeros."""
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


def noise(seconds: float, colour: str, level_dbfs: float, seed: int = 0) -> Samples:
    """White, pink or brown noise at ``level_dbfs``."""
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[colour]
    return at_level(_coloured(int(seconds * SAMPLE_RATE), exponent, seed), level_dbfs)


def hum(
    seconds: float, mains_hz: float = 50.0, level_dbfs: float = -30.0, seed: int = 0
) -> Samples:
    """Mains hum: the fundamental and its first harmonics, falling off, slowly wobbling."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phases = _rng(seed).uniform(0, 2 * np.pi, 8)
    wave = sum(np.sin(2 * np.pi * mains_hz * k * t + phases[k]) / k**1.2 for k in range(1, 8)) * (
        1 + 0.05 * np.sin(2 * np.pi * 0.3 * t)
    )
    return at_level(np.asarray(wave), level_dbfs)


def _tone_train(
    seconds: float, pick: Callable[[int], Sequence[float]], on_s: float, period_s: float
) -> npt.NDArray[np.float64]:
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    on = int(on_s * SAMPLE_RATE)
    t = np.arange(on) / SAMPLE_RATE
    ramp = np.minimum(1.0, np.minimum(np.arange(on), np.arange(on)[::-1]) / 80.0)
    for index, start in enumerate(range(0, n - on, int(period_s * SAMPLE_RATE))):
        tone = sum(np.sin(2 * np.pi * f * t) for f in pick(index))
        out[start : start + on] = tone * ramp
    return out


_DTMF_LOW = (697.0, 770.0, 852.0, 941.0)
_DTMF_HIGH = (1209.0, 1336.0, 1477.0)


def dtmf(seconds: float, level_dbfs: float = -20.0, seed: int = 0) -> Samples:
    """Telephone keypad tones: 100 ms digits with 100 ms gaps, random keys."""
    keys = _rng(seed).integers(0, 12, 10_000)

    def pick(i: int) -> tuple[float, float]:
        k = int(keys[i % len(keys)])
        return _DTMF_LOW[k // 3], _DTMF_HIGH[k % 3]

    return at_level(_tone_train(seconds, pick, 0.1, 0.2), level_dbfs)


def beeps(seconds: float, level_dbfs: float = -20.0, seed: int = 0) -> Samples:
    """A 1 kHz beep of 200 ms every second (a reversing truck, a monitor)."""
    return at_level(_tone_train(seconds, lambda _i: (1000.0,), 0.2, 1.0), level_dbfs)


_CHORDS = ((0, 4, 7), (5, 9, 12), (7, 11, 14), (-3, 0, 4))  # I IV V vi around A3


def music(seconds: float, level_dbfs: float = -20.0, seed: int = 0) -> Samples:
    """Music-like: harmonic-rich triads changing every two beats at 120 bpm, each beat
    struck and decaying, with a low thump on the beat and hi-hat noise between beats."""
    n = int(seconds * SAMPLE_RATE)
    beat = SAMPLE_RATE // 2
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n)
    rng = _rng(seed)
    for start in range(0, n, beat):
        stop = min(n, start + beat)
        local = t[start:stop] - t[start]
        chord = _CHORDS[(start // (2 * beat)) % len(_CHORDS)]
        env = np.exp(-3.0 * local)
        for semitone in chord:
            f = 220.0 * 2 ** (semitone / 12)
            for k in range(1, 5):
                out[start:stop] += env * np.sin(2 * np.pi * f * k * local) / k**1.5
        out[start:stop] += 1.5 * np.exp(-25 * local) * np.sin(2 * np.pi * 55 * local)
        hat = start + beat // 2
        if hat < n:
            length = min(n - hat, 800)
            out[hat : hat + length] += (
                0.3 * rng.standard_normal(length) * np.exp(-np.arange(length) / 150)
            )
    return at_level(out, level_dbfs)


def clicks(seconds: float, level_dbfs: float = -30.0, seed: int = 0) -> Samples:
    """Keyboard-like: short decaying bursts at irregular times, about 8 a second."""
    n = int(seconds * SAMPLE_RATE)
    rng = _rng(seed)
    out = np.zeros(n)
    gaps = rng.exponential(SAMPLE_RATE / 8, int(seconds * 16) + 16).astype(int) + 200
    length = 240
    decay = np.exp(-np.arange(length) / 40)
    for start in np.cumsum(gaps):
        if start + length > n:
            break
        out[start : start + length] += rng.uniform(0.3, 1.0) * rng.standard_normal(length) * decay
    return at_level(out, level_dbfs)


NOISE_LEVELS = (-50.0, -40.0, -30.0, -20.0)


def non_speech() -> dict[str, Callable[[float], Samples]]:
    """Name -> generator (seconds -> samples) for every non-speech signal of the set."""
    signals: dict[str, Callable[[float], Samples]] = {"silence": silence}
    for colour in ("white", "pink", "brown"):
        for level in NOISE_LEVELS:
            signals[f"{colour} noise {level:.0f} dBFS"] = functools.partial(
                noise, colour=colour, level_dbfs=level
            )
    signals["hum 50 Hz -30 dBFS"] = functools.partial(hum, mains_hz=50.0, level_dbfs=-30.0)
    signals["hum 60 Hz -30 dBFS"] = functools.partial(hum, mains_hz=60.0, level_dbfs=-30.0)
    signals["DTMF -20 dBFS"] = dtmf
    signals["beeps 1 kHz -20 dBFS"] = beeps
    signals["music-like -20 dBFS"] = music
    signals["clicks -30 dBFS"] = clicks
    return signals


def should_be_empty(name: str) -> bool:
    """The issue's stricter goal (0 words): silence, noise at or below -30 dBFS, hum, tones."""
    if name == "silence" or name.startswith(("hum", "DTMF", "beeps")):
        return True
    if "noise" in name:
        return float(name.split()[-2]) <= -30.0
    return False


def onset(samples: npt.NDArray[np.floating], below_peak_db: float = 30.0) -> float:
    """Seconds to the first 10 ms frame within ``below_peak_db`` of the loudest frame."""
    frame = SAMPLE_RATE // 100
    whole = len(samples) // frame * frame
    if whole == 0:
        return 0.0
    power = np.mean(np.square(samples[:whole].reshape(-1, frame), dtype=np.float64), axis=1)
    limit = power.max() * 10.0 ** (-below_peak_db / 10.0)
    return float(np.argmax(power >= limit)) * frame / SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class Placement:
    """One clip inside a long-form recording."""

    index: int
    clip: int
    """Which of the clips it is."""
    start: float
    """Where the clip's first sample went (s)."""
    speech_start: float
    """Where its speech begins (s): ``start`` plus the clip's own :func:`onset`."""
    duration: float
    reference: str


@dataclass(frozen=True, slots=True)
class LongForm:
    """A long recording and what is in it."""

    samples: Samples
    placements: tuple[Placement, ...]
    music_span: tuple[float, float] | None

    @property
    def reference(self) -> str:
        """The references of the clips, joined in order."""
        return " ".join(p.reference for p in self.placements)


def long_form(
    clips: Sequence[tuple[npt.NDArray[np.floating], str]],
    min_seconds: float,
    *,
    pause_s: tuple[float, float] = (0.5, 4.0),
    noise_dbfs: float | None = None,
    music_s: float = 0.0,
    seed: int = 0,
) -> LongForm:
    """Clips (samples, reference) cycled in a seeded order with random pauses until the
    recording lasts ``min_seconds``; pink noise under it all at ``noise_dbfs``; a
    stretch of ``music_s`` seconds of :func:`music` (at -25 dBFS) in the middle pause."""
    rng = _rng(seed)
    order: list[int] = []
    total = 0.0
    while total < min_seconds:
        for i in rng.permutation(len(clips)):
            order.append(int(i))
            total += len(clips[i][0]) / SAMPLE_RATE + float(np.mean(pause_s))
            if total >= min_seconds:
                break
    pauses = rng.uniform(*pause_s, len(order) + 1)
    middle = len(order) // 2 if music_s > 0 else -1
    pieces: list[npt.NDArray[np.floating]] = []
    placements: list[Placement] = []
    cursor = 0
    music_span = None
    for k, i in enumerate(order):
        pause = int(pauses[k] * SAMPLE_RATE)
        if k == middle:
            stretch = music(music_s, -25.0, seed)
            pad = np.zeros(SAMPLE_RATE)  # a second of quiet either side of the music
            pieces += [np.zeros(pause), stretch, pad]
            music_span = (
                (cursor + pause) / SAMPLE_RATE,
                (cursor + pause + len(stretch)) / SAMPLE_RATE,
            )
            pause += len(stretch) + len(pad)
        else:
            pieces.append(np.zeros(pause))
        cursor += pause
        samples, reference = clips[i]
        start = cursor / SAMPLE_RATE
        placements.append(
            Placement(k, i, start, start + onset(samples), len(samples) / SAMPLE_RATE, reference)
        )
        pieces.append(samples)
        cursor += len(samples)
    pieces.append(np.zeros(int(pauses[-1] * SAMPLE_RATE)))
    out = np.concatenate(pieces).astype(np.float32)
    if noise_dbfs is not None:
        out += at_level(_coloured(len(out), 1.0, seed + 1), noise_dbfs)
    return LongForm(out, tuple(placements), music_span)


@dataclass(frozen=True, slots=True)
class LongFormScore:
    """How a transcript of a :class:`LongForm` recording lines up with what is in it."""

    lost_runs: tuple[int, ...]
    """Error regions where the reference has >= 5 more words than the transcript."""
    inserted_runs: tuple[int, ...]
    """Error regions where the transcript has >= 5 more words than the reference."""
    onset_errors: tuple[float, ...]
    """Per utterance: |time of the word heard for its first word - where its speech
    was placed| (inf when its first word was not heard)."""
    lost_vs_alone: tuple[int, ...] = ()
    """Of the lost runs, those in which >= 5 reference words that the same set-up hears
    when each clip is transcribed alone are missing from the long transcript (what the
    long recording itself lost, not what the model cannot hear in any case); the count
    is those words. Empty when no alone transcripts were given."""
    lost_at: tuple[int, ...] = ()
    """For each of :attr:`lost_runs`, the placement most of its reference words belong to."""

    def onsets_within(self, seconds: float) -> float:
        """Share of utterances whose first word is placed within ``seconds``."""
        return sum(e <= seconds for e in self.onset_errors) / max(1, len(self.onset_errors))

    def heard_onsets_within(self, seconds: float) -> float:
        """The same share among utterances whose first word the transcript has."""
        heard = [e for e in self.onset_errors if e != float("inf")]
        return sum(e <= seconds for e in heard) / max(1, len(heard))


def _matched(ref: list[str], hyp: list[str]) -> tuple[Any, dict[int, int], set[int]]:
    """jiwer's alignment, reference index -> transcript index for aligned words
    (equal or substituted), and the reference indices heard exactly."""
    import jiwer

    alignment = jiwer.process_words(" ".join(ref), " ".join(hyp) or "<nothing>").alignments[0]
    matched: dict[int, int] = {}
    equal: set[int] = set()
    for chunk in alignment:
        if chunk.type in ("equal", "substitute"):
            for k in range(chunk.ref_end_idx - chunk.ref_start_idx):
                matched[chunk.ref_start_idx + k] = chunk.hyp_start_idx + k
                if chunk.type == "equal":
                    equal.add(chunk.ref_start_idx + k)
    return alignment, matched, equal


def score_long_form(
    recording: LongForm,
    words: Sequence[tuple[float, str]],
    normalize: Callable[[str], str],
    run: int = 5,
    starts: Sequence[float] | None = None,
    alone: Sequence[str] | None = None,
) -> LongFormScore:
    """Align the transcript's words (start time, word) with the joined references
    (jiwer, after ``normalize``): lost and inserted runs and first-word time errors,
    against ``starts`` (one per placement) or else each placement's ``speech_start``.
    ``alone`` (one transcript per placement, each clip transcribed on its own) adds
    :attr:`LongFormScore.lost_vs_alone`."""
    ref: list[str] = []
    first: list[int] = []
    owner: list[int] = []
    for placement in recording.placements:
        first.append(len(ref))
        tokens = normalize(placement.reference).split()
        ref += tokens
        owner += [placement.index] * len(tokens)
    hyp: list[str] = []
    times: list[float] = []
    for start, word in words:
        for token in normalize(word).split():
            hyp.append(token)
            times.append(start)
    alignment, matched, equal = _matched(ref, hyp)
    heard_alone: set[int] = set()
    if alone is not None:
        alone_hyp = [t for text in alone for t in normalize(text).split()]
        heard_alone = _matched(ref, alone_hyp)[2]
    lost: list[int] = []
    lost_at: list[int] = []
    lost_alone: list[int] = []
    inserted: list[int] = []
    region = [0, 0, -1]  # reference words, transcript words since the last match, start
    for chunk in [*alignment, None]:
        if chunk is None or chunk.type == "equal":
            if region[0] - region[1] >= run:
                lost.append(region[0] - region[1])
                span = range(region[2], region[2] + region[0])
                owners = [owner[i] for i in span]
                lost_at.append(max(set(owners), key=owners.count))
                missing = sum(1 for i in span if i in heard_alone and i not in equal)
                if missing >= run:
                    lost_alone.append(missing)
            if region[1] - region[0] >= run:
                inserted.append(region[1] - region[0])
            region = [0, 0, -1]
        else:
            if region[2] < 0:
                region[2] = chunk.ref_start_idx
            region[0] += chunk.ref_end_idx - chunk.ref_start_idx
            region[1] += chunk.hyp_end_idx - chunk.hyp_start_idx
    expected = starts if starts is not None else [p.speech_start for p in recording.placements]
    errors = tuple(
        abs(times[matched[i]] - at) if i in matched else float("inf")
        for at, i in zip(expected, first, strict=True)
    )
    return LongFormScore(tuple(lost), tuple(inserted), errors, tuple(lost_alone), tuple(lost_at))
