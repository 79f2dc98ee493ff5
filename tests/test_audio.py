"""stts.audio: every corpus file, generated containers, raw PCM, limits and bad input."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from stts.audio import SAMPLE_RATE, AudioLimits, RawFormat, decode_audio
from stts.errors import (
    AudioError,
    AudioTooLarge,
    AudioTooLong,
    CorruptAudio,
    EmptyAudio,
    UnsupportedAudio,
)
from tests.conftest import CORPUS_ITEMS, CorpusItem, corpus_file, requires_corpus

# MP3 decoders trim the encoder delay and padding (gapless playback) that the manifest's
# duration still counts: allow up to two MPEG frames (2 x 1152 samples) for MP3 only.
_MP3_SLACK_SAMPLES = 2 * 1152


@requires_corpus
@pytest.mark.parametrize("item", CORPUS_ITEMS, ids=lambda i: i.path.name)
def test_every_corpus_file_decodes_to_16k_mono_with_its_duration(item: CorpusItem) -> None:
    audio = decode_audio(item.path, raw=item.raw)
    assert audio.samples.dtype == np.float32
    assert audio.samples.ndim == 1
    assert np.abs(audio.samples).max() <= 1.0
    assert np.abs(audio.samples).max() > 0.01, "decoded to silence"
    tolerance = 0.01 * item.duration
    if item.format.startswith("mp3"):
        tolerance = max(tolerance, _MP3_SLACK_SAMPLES / item.sample_rate)
    assert audio.duration == pytest.approx(item.duration, abs=tolerance)
    assert audio.info.sample_rate == item.sample_rate
    assert audio.info.channels == item.channels


@requires_corpus
def test_resampled_and_downmixed_variants_match_the_original() -> None:
    """8 kHz mono and 44.1 kHz stereo copies of one utterance decode to nearly the same signal."""
    ref = decode_audio(corpus_file("deepspeech__LDC93S1.wav")).samples
    for name in (
        "deepspeech__LDC93S1_pcms16le_2_44100.wav",
        "deepspeech__LDC93S1_pcms16le_1_8000.wav",
    ):
        other = decode_audio(corpus_file(name)).samples
        n = min(len(ref), len(other))
        # 8 kHz has no content above 4 kHz: compare the correlation, not sample equality.
        corr = np.corrcoef(ref[:n], other[:n])[0, 1]
        assert corr > 0.9, (name, corr)


def _encode(
    samples: np.ndarray, rate: int, container: str, codec: str, layout: str = "mono"
) -> bytes:
    """Encode float mono samples in memory with PyAV (no files, no subprocess)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if codec == "vorbis":  # FFmpeg's native Vorbis encoder is marked experimental
            stream.codec_context.options = {"strict": "experimental"}
        channels = 2 if layout == "stereo" else 1
        pcm = np.tile(samples.astype(np.float32), (channels, 1))
        frame = av.AudioFrame.from_ndarray(pcm, format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@requires_corpus
@pytest.mark.parametrize(
    ("container", "codec", "rate", "layout"),
    [
        ("ogg", "vorbis", 44100, "stereo"),
        ("ogg", "libopus", 48000, "mono"),
        ("webm", "libopus", 48000, "stereo"),
        ("ipod", "aac", 22050, "mono"),  # .m4a
        ("flac", "flac", 32000, "stereo"),
        ("mp3", "libmp3lame", 24000, "mono"),
    ],
)
def test_generated_containers_decode(container: str, codec: str, rate: int, layout: str) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    source = decode_audio(corpus_file("deepspeech__LDC93S1.wav")).samples
    import soxr

    data = _encode(soxr.resample(source, SAMPLE_RATE, rate), rate, container, codec, layout)
    audio = decode_audio(data)
    assert audio.info.sample_rate == rate
    assert audio.duration == pytest.approx(len(source) / SAMPLE_RATE, abs=0.1)


@requires_corpus
def test_raw_pcm_needs_a_description_and_honours_it() -> None:
    data = corpus_file("pocketsphinx__goforward.raw").read_bytes()
    audio = decode_audio(data, raw=RawFormat(16000, 1, "s16le"))
    assert audio.duration == pytest.approx(2.786, abs=0.01)
    # The same bytes read as 8 kHz are twice as long once resampled to 16 kHz.
    assert decode_audio(data, raw=RawFormat(8000, 1, "s16le")).duration == pytest.approx(
        5.57, abs=0.01
    )
    # Stereo halves the frame count.
    assert decode_audio(data, raw=RawFormat(16000, 2, "s16le")).duration == pytest.approx(
        1.393, abs=0.01
    )
    with pytest.raises(CorruptAudio, match="multiple of the frame size"):
        decode_audio(data + b"\x00", raw=RawFormat())
    with pytest.raises(UnsupportedAudio):
        RawFormat(sample_rate=5)


def test_raw_float_and_u8_encodings_scale_to_unit_range() -> None:
    tone = (0.5 * np.sin(np.arange(16000) / 10)).astype("<f4")
    audio = decode_audio(tone.tobytes(), raw=RawFormat(16000, 1, "f32le"))
    assert np.allclose(audio.samples, tone, atol=1e-6)
    u8 = (tone * 127 + 128).astype("u1")
    audio = decode_audio(u8.tobytes(), raw=RawFormat(16000, 1, "u8"))
    assert np.allclose(audio.samples, tone, atol=0.02)


# -- bad input: each a clear AudioError subclass with its status --------------------------
# Truncated and damaged files are decoded as far as they decode, with a warning (one rule
# for every container): tests/test_audio_hardening.py.


@requires_corpus
@pytest.mark.parametrize(
    ("name", "make", "error", "status"),
    [
        ("empty", lambda: b"", EmptyAudio, 400),
        ("random bytes", lambda: np.random.default_rng(1).bytes(8000), UnsupportedAudio, 415),
        (
            "text named .wav",
            lambda: b"this is a text file, not audio\n" * 50,
            UnsupportedAudio,
            415,
        ),
    ],
)
def test_bad_input_is_a_clear_audio_error(
    name: str, make, error: type[AudioError], status: int
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as info:
        decode_audio(make())
    assert info.value.status_code == status
    assert info.value.message and "/" not in info.value.message.split(":")[0]
    assert "Traceback" not in info.value.message


@requires_corpus
def test_limits_refuse_large_and_long_audio_cheaply() -> None:
    path = corpus_file("openai-whisper__jfk.flac")
    with pytest.raises(AudioTooLarge):
        decode_audio(path, limits=AudioLimits(max_bytes=1000))
    with pytest.raises(AudioTooLarge):
        decode_audio(io.BytesIO(path.read_bytes()), limits=AudioLimits(max_bytes=1000))
    # FLAC declares its length in the header: refused before decoding.
    with pytest.raises(AudioTooLong, match="header declares"):
        decode_audio(path, limits=AudioLimits(max_duration_s=5))
    # A WAV header's data size is refused before decoding too, when the file holds that much.
    wav = corpus_file("deepspeech__LDC93S1.wav")
    with pytest.raises(AudioTooLong, match=r"header declares 2\.9 s"):
        decode_audio(wav, limits=AudioLimits(max_duration_s=2))
    # Raw PCM has no header: refused from its byte count.
    raw = corpus_file("pocketsphinx__goforward.raw").read_bytes()
    with pytest.raises(AudioTooLong):
        decode_audio(raw, raw=RawFormat(), limits=AudioLimits(max_duration_s=1))


def test_stream_without_declared_length_stops_at_the_limit() -> None:
    """A stream with no duration in its header is cut off while decoding, not buffered whole."""
    samples = np.zeros(16000 * 20, np.float32)
    data = _encode(samples, 16000, "adts", "aac")  # raw ADTS AAC has no duration header
    with pytest.raises(AudioTooLong):
        decode_audio(data, limits=AudioLimits(max_duration_s=5))


def test_missing_file_is_an_audio_error(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedAudio, match="no such file"):
        decode_audio(tmp_path / "nope.wav")
    with pytest.raises(UnsupportedAudio, match="directory"):
        decode_audio(tmp_path)
