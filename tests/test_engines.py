"""Real engines on real audio: accuracy (WER), options, timestamps, concurrency."""

from __future__ import annotations

import concurrent.futures
import re
import time

import numpy as np
import pytest

from stts.audio import RawFormat, decode_audio
from stts.config import Settings
from stts.engines.base import TranscribeOptions
from stts.engines.pocketsphinx import PocketSphinxEngine
from stts.evaluation import normalize_text, word_error_rate
from stts.service import EngineManager
from tests.conftest import CORPUS_ITEMS, corpus_file, requires_corpus
from tests.speech import SENTENCES, spoken

pytestmark = [pytest.mark.slow, requires_corpus]

# Measured on this corpus (27 files, 113 s) with the embedded models, language "en":
# Whisper base int8 beam 5: 11.6 %; PocketSphinx 5 en-us: 39.4 % (42.3 % before its front end
# was reset per utterance). Ceilings leave a margin.
WER_CEILING = {"whisper": 0.15, "pocketsphinx": 0.45}


@pytest.mark.parametrize("engine", ["whisper", "pocketsphinx"])
def test_corpus_wer_is_below_the_measured_ceiling(manager: EngineManager, engine: str) -> None:
    refs, hyps = [], []
    for item in CORPUS_ITEMS:
        audio = decode_audio(item.path, raw=item.raw)
        result = manager.transcribe(audio, engine=engine, options=TranscribeOptions(language="en"))
        assert result.engine == engine and not result.fallback
        refs.append(item.reference)
        hyps.append(result.text)
    wer = word_error_rate(refs, hyps)
    print(f"{engine} WER over {len(refs)} files: {wer:.3f}")
    assert wer < WER_CEILING[engine]


def test_whisper_jfk_exact_phrase_and_language_detection(manager: EngineManager) -> None:
    audio = decode_audio(corpus_file("openai-whisper__jfk.flac"))
    result = manager.transcribe(audio)  # no language: detected
    assert "ask not what your country can do for you" in normalize_text(result.text)
    assert result.language == "en"
    assert result.engine == "whisper" and result.model == "base"
    assert result.duration == pytest.approx(11.0, abs=0.05)


def test_whisper_word_timestamps_are_ordered_and_inside_the_audio(manager: EngineManager) -> None:
    audio = decode_audio(corpus_file("openai-whisper__jfk.flac"))
    result = manager.transcribe(audio, options=TranscribeOptions(word_timestamps=True))
    words = result.words
    assert len(words) >= 20
    assert normalize_text(" ".join(w.word for w in words)) == normalize_text(result.text)
    for prev, cur in zip(words, words[1:], strict=False):
        assert prev.start <= prev.end <= cur.start + 0.01
    assert words[0].start >= 0 and words[-1].end <= audio.duration + 0.05
    # Without the option no words are computed.
    plain = manager.transcribe(audio, options=TranscribeOptions())
    assert plain.words == ()


# Words an English translation of SENTENCES has and a French, German or Spanish
# transcription does not.
ENGLISH = {"the", "and", "we", "to", "is", "are", "of", "all", "everyone", "hello", "good"}
ENGLISH |= {"morning", "today", "weather", "very", "nice", "day", "going", "buy", "market"}
ENGLISH |= {"bread", "cheese", "city", "town", "time", "beautiful", "you", "for", "go"}


def _words(text: str) -> set[str]:
    return set(normalize_text(text).split())


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_whisper_translates_french_german_and_spanish_into_english(
    manager: EngineManager, language: str
) -> None:
    audio = spoken(SENTENCES[language], language)
    heard = manager.transcribe(audio, options=TranscribeOptions(language=language))
    translated = manager.transcribe(audio, options=TranscribeOptions(task="translate"))
    assert translated.task == "translate"
    gained = (_words(translated.text) & ENGLISH) - _words(heard.text)
    assert len(gained) >= 3, (heard.text, translated.text)


def test_whisper_initial_prompt_changes_the_spelling(manager: EngineManager) -> None:
    """Names that sound alike: the prompt's spelling wins (not the file's own reference)."""
    audio = spoken("Catherine and Jeffrey will meet Stephen at the cafe tomorrow.")
    plain = _words(manager.transcribe(audio, options=TranscribeOptions(language="en")).text)
    prompted = _words(
        manager.transcribe(
            audio,
            options=TranscribeOptions(language="en", initial_prompt="Kathryn, Geoff, Steven."),
        ).text
    )
    assert {"catherine", "stephen"} <= plain and not {"kathryn", "steven"} & plain
    assert {"kathryn", "steven"} <= prompted


def test_whisper_vad_filter_skips_the_noise_before_speech(manager: EngineManager) -> None:
    """12 s of noise, a phrase, 12 s of noise: without the filter Whisper's first segment
    starts at the noise; with it, at the phrase (its timestamps mapped back)."""
    phrase = spoken("Please call Stella.").samples
    noise = (np.random.default_rng(0).standard_normal(16_000 * 12) * 0.03).astype(np.float32)
    audio = np.concatenate([noise, phrase, noise])
    plain = manager.transcribe(audio, options=TranscribeOptions(language="en", vad_filter=False))
    filtered = manager.transcribe(audio, options=TranscribeOptions(language="en", vad_filter=True))
    assert filtered.segments and filtered.segments[0].start >= 11, filtered.segments
    assert plain.segments and plain.segments[0].start < filtered.segments[0].start - 5


def test_pocketsphinx_hears_go_forward_ten_meters(manager: EngineManager) -> None:
    audio = decode_audio(corpus_file("pocketsphinx__goforward.raw"), raw=RawFormat())
    result = manager.transcribe(audio, engine="pocketsphinx")
    assert normalize_text(result.text) == "go forward ten meters"
    assert [w.word for w in result.words] == ["go", "forward", "ten", "meters"]


def test_pocketsphinx_answer_does_not_depend_on_earlier_requests(settings: Settings) -> None:
    """One decoder serves many requests in turn: the same audio must give the same words
    whatever that decoder decoded before (its feature front end used to carry state)."""
    engine = PocketSphinxEngine(settings)
    engine.load()
    options = TranscribeOptions(language="en")
    jfk = decode_audio(corpus_file("openai-whisper__jfk.flac")).samples
    other = decode_audio(corpus_file("deepspeech__LDC93S1_pcms16le_2_44100.wav")).samples
    first = engine.transcribe(jfk, options).text
    again = engine.transcribe(jfk, options).text
    engine.transcribe(other, options)
    after_other = engine.transcribe(jfk, options).text
    fresh = PocketSphinxEngine(settings)
    fresh.load()
    assert [again, after_other, fresh.transcribe(jfk, options).text] == [first] * 3


@pytest.mark.parametrize("engine", ["whisper", "pocketsphinx"])
def test_idle_unloaded_model_reloads_and_answers_the_same(settings: Settings, engine: str) -> None:
    """A real model freed after idle_unload_s loads again on the next request and gives
    the same transcript; the freed instances are closed (their model dropped)."""
    section = settings.engine_settings(engine).model_copy(update={"idle_unload_s": 3600})
    manager = EngineManager(settings.model_copy(update={engine: section}))
    try:
        audio = decode_audio(corpus_file("openai-whisper__jfk.flac"))
        options = TranscribeOptions(language="en")
        before = manager.transcribe(audio, engine=engine, options=options).text
        slot = manager.slot(manager.resolve(engine))
        old = list(slot._all_instances)
        assert slot.unload_if_idle(time.monotonic() + 3601)
        assert slot.state == "unloaded" and slot._all_instances == []
        model_attr = "_model" if engine == "whisper" else "_decoder"
        assert all(getattr(inst, model_attr) is None for inst in old)
        assert manager.transcribe(audio, engine=engine, options=options).text == before
        assert slot.state == "loaded" and slot.unloads == 1
    finally:
        manager.close()


@pytest.mark.parametrize("engine", ["whisper", "pocketsphinx"])
def test_eight_threads_get_the_same_transcripts_as_sequential_calls(
    manager: EngineManager, engine: str
) -> None:
    names = [
        "pocketsphinx__001.wav",
        "pocketsphinx__002.wav",
        "pocketsphinx__003.wav",
        "pocketsphinx__005.wav",
        "speechbrain__spk1_snt1.wav",
        "atrok-speechtext__export_1.wav",
        "uberi-speechrecognition__english.wav",
        "deepspeech__LDC93S1.wav",
    ]
    audios = [decode_audio(corpus_file(n)) for n in names]
    options = TranscribeOptions(language="en")
    sequential = [manager.transcribe(a, engine=engine, options=options).text for a in audios]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        parallel = list(
            pool.map(lambda a: manager.transcribe(a, engine=engine, options=options).text, audios)
        )
    assert parallel == sequential


def test_engine_modules_never_decode_resample_or_import_per_request() -> None:
    """Lint: engines receive 16 kHz float32; no decoding library, no import inside transcribe."""
    import ast
    import pathlib

    import stts.engines as pkg

    forbidden = {"av", "soxr", "soundfile", "librosa", "scipy", "audioop", "pydub", "ffmpeg"}
    for path in pathlib.Path(pkg.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                for name in names:
                    assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
            if isinstance(node, ast.FunctionDef) and node.name == "transcribe":
                inner = [n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)]
                assert not inner, f"{path.name}: import inside transcribe()"
        assert not re.search(r"\bresample\(", path.read_text()), f"{path.name} resamples"
