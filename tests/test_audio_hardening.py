"""stts.audio hardening (issue 11): cancellable decoding, bounded memory, float input above
full scale, digital silence, and one rule for damaged files.

The damaged-file rule, for every container: decode what is decodable (skip packets the
codec rejects, stop at undecodable data, keep what a cut file holds), report it in
``DecodedAudio.warnings``, and refuse only a file in which nothing decodes.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
from collections.abc import Callable

import av
import numpy as np
import pytest
import soxr

from stts import audio as stts_audio
from stts.audio import SAMPLE_RATE, AudioLimits, RawFormat, decode_audio
from stts.errors import AudioTooLong, CorruptAudio, EmptyAudio
from stts.synthetic import float_wav
from tests.conftest import CORPUS_ITEMS, CorpusItem, corpus_file, requires_corpus

SPEECH = "deepspeech__LDC93S1.wav"  # 2.92 s, 16 kHz mono s16


def _encode(
    samples: np.ndarray, rate: int, container: str, codec: str, bit_rate: int | None = None
) -> bytes:
    """Mono float samples to an in-memory file, fed in 10 s frames like a recorder would."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        if bit_rate:
            stream.bit_rate = bit_rate
        step = rate * 10
        for start in range(0, len(samples), step):
            block = np.ascontiguousarray(samples[None, start : start + step], np.float32)
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _silent_opus(seconds: int) -> bytes:
    return _encode(np.zeros(16000 * seconds, np.float32), 16000, "ogg", "libopus", 6000)


# -- item 1: cancellable, bounded memory ---------------------------------------------------


class _CancelAfter:
    """A cancel check that answers True from its n-th call on, counting its calls."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


def test_cancel_stops_decoding_between_packets() -> None:
    from stts.errors import Cancelled

    data = _silent_opus(60)  # 3000 Opus packets of 20 ms
    cancel = _CancelAfter(50)
    with pytest.raises(Cancelled, match="decoding was stopped"):
        decode_audio(data, cancel=cancel)
    assert cancel.calls == 50  # polled per packet, and nothing decoded after it said stop
    with pytest.raises(Cancelled):
        decode_audio(data, cancel=lambda: True)
    assert decode_audio(data, cancel=lambda: False).duration == pytest.approx(60, abs=0.1)


@requires_corpus
def test_cancel_stops_raw_pcm_too() -> None:
    from stts.errors import Cancelled

    pcm = corpus_file("pocketsphinx__goforward.raw").read_bytes() * 20  # 56 s
    cancel = _CancelAfter(3)
    with pytest.raises(Cancelled):
        decode_audio(pcm, raw=RawFormat(), cancel=cancel)
    assert cancel.calls == 3


def _traced_peak(decode: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        decode()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_decoding_peaks_near_the_size_of_the_result() -> None:
    """Five minutes of Opus decode into one buffer: no list of chunks plus its concatenation."""
    data = _silent_opus(300)
    result = 300 * SAMPLE_RATE * 4  # 19.2 MB of float32
    peak = _traced_peak(lambda: decode_audio(data))
    # The baseline (chunks, then np.concatenate, then an isfinite mask) peaked at 2.25x.
    assert peak < 1.15 * result, f"peak {peak / 1e6:.1f} MB for a {result / 1e6:.1f} MB result"


def test_a_stream_without_a_length_grows_its_buffer_geometrically() -> None:
    # Raw ADTS AAC declares no exact length: the buffer starts small and grows.
    data = _encode(np.zeros(16000 * 120, np.float32), 16000, "adts", "aac", 16000)
    audio = decode_audio(data)
    assert audio.duration == pytest.approx(120, abs=0.2)
    peak = _traced_peak(lambda: decode_audio(data))
    assert peak < 1.6 * audio.samples.nbytes


def test_raw_pcm_is_decoded_from_a_view_of_the_callers_buffer() -> None:
    tone = (0.3 * np.sin(np.arange(16000 * 60) / 7) * 32767).astype("<i2")
    pcm = bytearray(tone.tobytes())  # 1.9 MB, what the Wyoming face collects
    result = len(tone) * 4
    peak = _traced_peak(lambda: decode_audio(pcm, raw=RawFormat()))
    # Neither bytes(bytearray) nor whole-input temporaries: the result plus one block.
    assert peak < result + 2_000_000, f"peak {peak / 1e6:.1f} MB"
    same = decode_audio(bytes(pcm), raw=RawFormat()).samples
    assert np.array_equal(decode_audio(memoryview(pcm), raw=RawFormat()).samples, same)


# -- item 7: float input above full scale, digital silence ---------------------------------


@requires_corpus
@pytest.mark.parametrize("rate", [16000, 44100], ids=["16k", "44k-resampled"])
def test_float_input_is_clipped_per_channel_before_downmix_and_resampling(rate: int) -> None:
    speech = decode_audio(corpus_file(SPEECH)).samples
    left = soxr.resample(speech, SAMPLE_RATE, rate) * 1000.0  # 60 dB over full scale
    right = np.zeros_like(left)
    loud = decode_audio(float_wav(np.stack([left, right]), rate))
    clipped = decode_audio(float_wav(np.stack([np.clip(left, -1, 1), right]), rate))
    # Clipped at the edge: exactly what a file clipped at full scale decodes to (the
    # baseline mixed and resampled the 1000x signal first, then clipped the result).
    assert np.array_equal(loud.samples, clipped.samples)
    assert np.abs(loud.samples).max() <= 1.0
    if rate == SAMPLE_RATE:  # no resampler ringing: the silent right channel halves it
        assert np.abs(loud.samples).max() == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("value", [1e30, -3e38], ids=["1e30", "-3e38"])
def test_huge_finite_float_samples_decode_clipped(value: float) -> None:
    samples = np.zeros(44100, np.float32)
    samples[::100] = value
    audio = decode_audio(float_wav(samples, 44100))
    assert np.isfinite(audio.samples).all() and np.abs(audio.samples).max() <= 1.0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_infinite_float_samples_are_refused(value: float) -> None:
    samples = np.zeros(16000, np.float32)
    samples[8000] = value
    with pytest.raises(CorruptAudio, match="NaN or infinite"):
        decode_audio(float_wav(samples, 16000))


def _dither(n: int, seed: int = 0) -> np.ndarray:
    """TPDF dither of one 16-bit LSB: what a quiet, properly dithered recording holds."""
    rng = np.random.default_rng(seed)
    return ((rng.random(n) - rng.random(n)) / 32768).astype(np.float32)


@requires_corpus
@pytest.mark.parametrize("item", CORPUS_ITEMS, ids=lambda i: i.path.name)
def test_corpus_speech_is_never_silent(item: CorpusItem) -> None:
    samples = decode_audio(item.path, raw=item.raw).samples
    assert not stts_audio.is_silent(samples)
    # Still sound 20 dB down (the quietest corpus file peaks at -33 dBFS RMS per 25 ms).
    assert not stts_audio.is_silent(samples * np.float32(0.1))


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("empty", lambda: np.zeros(0, np.float32)),
        ("10 min of digital zeros", lambda: np.zeros(16000 * 600, np.float32)),
        ("dither", lambda: _dither(16000 * 30)),
        ("DC offset with dither", lambda: _dither(16000 * 30) + np.float32(0.3)),
        ("a float file clipped to a constant", lambda: np.ones(16000, np.float32)),
        (
            "hiss at -70 dBFS",
            lambda: (np.random.default_rng(1).standard_normal(16000 * 5) * 10 ** (-70 / 20)).astype(
                np.float32
            ),
        ),
        ("a partial frame", lambda: _dither(123)),
    ],
)
def test_silence_and_near_silence_are_silent(name: str, make: Callable[[], np.ndarray]) -> None:
    assert stts_audio.is_silent(make())


def test_one_short_sound_in_ten_minutes_of_zeros_is_not_silent() -> None:
    samples = np.zeros(16000 * 600, np.float32)
    t = np.arange(800) / 16000
    samples[16000 * 420 : 16000 * 420 + 800] = 0.03 * np.sin(2 * np.pi * 440 * t)  # 50 ms
    assert not stts_audio.is_silent(samples)
    assert stts_audio.is_silent(samples, threshold_dbfs=-20.0)


# -- item 11: damaged files, one rule ------------------------------------------------------


def _flip_middle(data: bytes, count: int = 64) -> bytes:
    out = bytearray(data)
    middle = len(out) // 2
    out[middle : middle + count] = bytes(b ^ 0xFF for b in out[middle : middle + count])
    return bytes(out)


def _junk(n: int = 5000) -> bytes:
    return np.random.default_rng(3).bytes(n)


def _assert_header_safe(warnings: tuple[str, ...]) -> None:
    # The API passes them on as an X-STT-Warning header: one short ASCII line each.
    for warning in warnings:
        assert warning.isascii() and "\n" not in warning and len(warning) < 200, warning


@requires_corpus
@pytest.mark.parametrize(
    ("name", "damage", "kept", "warned"),
    [
        # One damaged stretch in the middle: the rest still decodes, with a warning.
        ("ort-extensions__1272-141231-0002.mp3", _flip_middle, 0.95, True),
        ("coqui-stt__LDC93S1.opus", _flip_middle, 0.5, True),
        # Trailing junk: everything before it decodes.
        ("ort-extensions__1272-141231-0002.mp3", lambda b: b + _junk(), 0.99, True),
        ("ort-extensions__1272-141231-0002.mp3", lambda b: b + bytes(5000), 0.99, True),
        ("coqui-stt__LDC93S1.opus", lambda b: b + _junk(), 0.99, False),
        ("openai-whisper__jfk.flac", lambda b: b + _junk(), 0.99, False),
        (SPEECH, lambda b: b + _junk(), 0.99, False),
        # Cut in half: what is there decodes; WAV and FLAC headers tell it is short.
        (SPEECH, lambda b: b[: len(b) // 2], 0.49, True),
        ("openai-whisper__jfk.flac", lambda b: b[: len(b) // 2], 0.45, True),
        ("coqui-stt__LDC93S1.opus", lambda b: b[: len(b) // 2], 0.3, False),
        ("ort-extensions__1272-141231-0002.mp3", lambda b: b[: len(b) // 2], 0.49, False),
    ],
    ids=[
        "mp3 bad packets",
        "opus bad page",
        "mp3 trailing junk",
        "mp3 trailing zeros",
        "opus trailing junk",
        "flac trailing junk",
        "wav trailing junk",
        "wav cut",
        "flac cut",
        "opus cut",
        "mp3 cut",
    ],
)
def test_damaged_files_decode_what_is_decodable(
    name: str, damage: Callable[[bytes], bytes], kept: float, warned: bool
) -> None:
    original = corpus_file(name).read_bytes()
    whole = decode_audio(original)
    assert whole.warnings == ()
    audio = decode_audio(damage(original))
    assert audio.duration >= kept * whole.duration
    assert audio.duration <= whole.duration + 0.05
    assert bool(audio.warnings) == warned, audio.warnings
    _assert_header_safe(audio.warnings)
    assert np.abs(audio.samples).max() > 0.01


@requires_corpus
def test_a_file_in_which_nothing_decodes_is_refused() -> None:
    flac = corpus_file("openai-whisper__jfk.flac").read_bytes()
    with pytest.raises(CorruptAudio, match="nothing in the file could be decoded"):
        decode_audio(flac[:4000] + _junk(20000))  # its header, then no frame
    header_only = bytearray(corpus_file(SPEECH).read_bytes()[:44])
    struct.pack_into("<I", header_only, 40, 0)
    with pytest.raises(EmptyAudio):
        decode_audio(bytes(header_only))  # a WAV that says, truthfully, it holds nothing


def _with_data_size(data: bytes, size: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<I", out, out.find(b"data") + 4, size)
    return bytes(out)


@requires_corpus
@pytest.mark.parametrize("size", [0x7FFFF000, 0xFFFFFFFF, 0x7FFFFFFF, 0])
def test_a_wav_data_size_placeholder_means_up_to_the_end(size: int) -> None:
    """Streaming writers (arecord to stdout: 0x7FFFF000) leave a size they never fill in."""
    data = corpus_file(SPEECH).read_bytes()
    audio = decode_audio(_with_data_size(data, size))
    assert audio.duration == pytest.approx(decode_audio(data).duration, abs=0.001)
    assert audio.warnings == ()


@requires_corpus
def test_a_wav_header_past_the_end_is_measured_by_the_file() -> None:
    data = corpus_file(SPEECH).read_bytes()
    claims_10_hours = _with_data_size(data, 10 * 3600 * 16000 * 2)
    audio = decode_audio(claims_10_hours)  # not "36000 s too long"
    assert audio.duration == pytest.approx(2.92, abs=0.01)
    assert audio.warnings and "truncated" in audio.warnings[0]
    # The file's own length still counts against the limit, before decoding.
    with pytest.raises(AudioTooLong, match="header declares"):
        decode_audio(claims_10_hours, limits=AudioLimits(max_duration_s=2))
