"""Wav2Vec2/CTC on ONNX Runtime, checked against the transformers reference.

No CTC weights ship on PyPI, so the test builds a tiny Wav2Vec2ForCTC (random weights,
a real 32-token character vocabulary), saves it in Hugging Face layout and exports it to
ONNX exactly as a user would; the engine then loads that directory. Its transcripts are
gibberish, but they must be the *same* gibberish as transformers + PyTorch produce
(logits, greedy CTC text, word offsets), on real corpus audio. That pins the whole
runtime path: normalisation, the ONNX session, CTC collapsing, word splitting, timing.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stts.audio import DecodedAudio, RawFormat, decode_audio
from stts.config import Settings
from stts.engines.base import CancelToken, TranscribeOptions
from stts.engines.wav2vec2 import Wav2Vec2Engine
from stts.errors import Cancelled, EngineUnavailable
from stts.service import EngineManager, engine_report
from stts.testing import build_ctc_model, export_ctc_onnx
from tests.conftest import LiveServer, corpus_file, requires_corpus

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = [pytest.mark.slow, requires_corpus]  # real models

FILES = [
    "openai-whisper__jfk.flac",
    "deepspeech__LDC93S1_pcms16le_2_44100.wav",
    "coqui-stt__LDC93S1.opus",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Wav2Vec2ForCTC saved with its processor and exported to model.onnx."""
    return build_ctc_model(tmp_path_factory.mktemp("wav2vec2-tiny"), tiny=True)


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> Any:
    """transformers + PyTorch on the same directory: the implementation we must match."""
    model = transformers.Wav2Vec2ForCTC.from_pretrained(model_dir).eval()
    processor = transformers.Wav2Vec2Processor.from_pretrained(model_dir)

    def run(audio: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], str, list[dict[str, Any]]]:
        inputs = processor(audio, sampling_rate=16_000, return_tensors="pt")
        with torch.no_grad():
            logits = model(inputs.input_values).logits[0].numpy()
        decoded = processor.tokenizer.decode(logits.argmax(-1), output_word_offsets=True)
        return logits, decoded.text, decoded.word_offsets

    return run


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[Wav2Vec2Engine]:
    eng = Wav2Vec2Engine(Settings(wav2vec2={"model_path": model_dir, "language": "en"}))
    eng.load()
    yield eng
    eng.close()


def _audio(name: str) -> DecodedAudio:
    return decode_audio(corpus_file(name), raw=RawFormat() if name.endswith(".raw") else None)


def _strip_specials(text: str) -> str:
    for token in ("<s>", "</s>", "<unk>"):
        text = text.replace(token, "")
    return " ".join(text.split())


@pytest.mark.parametrize("name", FILES)
def test_onnx_engine_matches_transformers_logits_text_and_word_times(
    engine: Wav2Vec2Engine, reference: Any, name: str
) -> None:
    audio = _audio(name)
    ref_logits, ref_text, ref_words = reference(audio.samples)
    np.testing.assert_allclose(engine.logits(audio.samples), ref_logits, atol=1e-4)

    result = engine.transcribe(audio.samples, TranscribeOptions())
    assert len(result.words) >= 5, "the tiny model should emit several words on speech"
    assert result.text == _strip_specials(ref_text)
    # transformers reports offsets in frames; a frame is 320 samples = 20 ms
    ref_times = [
        (round(w["start_offset"] * 0.02, 3), round(w["end_offset"] * 0.02, 3))
        for w in ref_words
        if _strip_specials(w["word"])
    ]
    assert [(w.start, w.end) for w in result.words] == ref_times
    assert all(0.0 < (w.probability or 0) <= 1.0 for w in result.words)
    assert result.duration == pytest.approx(audio.duration, abs=0.01)
    assert result.language == "en" and result.model == model_dir_name(engine)


def model_dir_name(engine: Wav2Vec2Engine) -> str:
    path = engine.settings.wav2vec2.model_path
    assert path is not None
    return path.name


def test_long_audio_is_cut_into_windows_at_quiet_places(model_dir: Path) -> None:
    eng = Wav2Vec2Engine(Settings(wav2vec2={"model_path": model_dir, "window_s": 10}))
    eng.load()
    parts = [_audio(n).samples for n in FILES * 2]
    audio = np.concatenate(parts)  # about 34 s: four windows of at most 10 s
    windows = eng._windows(audio)
    assert windows[0][0] == 0 and windows[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:], strict=False))
    assert all(0 < end - start <= 10 * 16_000 for start, end in windows)
    assert len(windows) >= -(-len(audio) // (10 * 16_000)) >= 4

    result = eng.transcribe(audio, TranscribeOptions())
    words = result.words
    assert len(words) > 20
    assert all(a.start <= a.end <= b.start for a, b in zip(words, words[1:], strict=False))
    assert words[-1].end <= len(audio) / 16_000 + 0.02
    # A window's words are the words of that window decoded alone, shifted by its start.
    start, end = windows[2]
    alone = eng.transcribe(audio[start:end], TranscribeOptions()).words
    shifted = [w for w in words if start / 16_000 <= w.start < end / 16_000]
    assert [w.word for w in shifted] == [w.word for w in alone]
    assert [w.start for w in shifted] == pytest.approx([w.start + start / 16_000 for w in alone])

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        eng.transcribe(audio, TranscribeOptions(), cancel=token)


def test_probe_says_what_is_missing(tmp_path: Path, model_dir: Path) -> None:
    def reason(path: Path | None) -> str:
        return Wav2Vec2Engine.probe(Settings(wav2vec2={"model_path": path})).reason

    assert "STTS_WAV2VEC2__MODEL_PATH" in reason(None)
    assert reason(tmp_path / "nope") == f"model directory not found: {tmp_path / 'nope'}"
    assert "no ONNX model" in reason(tmp_path)
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes((model_dir / "model.onnx").read_bytes())
    assert "no vocab.json" in reason(tmp_path)
    assert reason(model_dir) == ""

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    (broken / "vocab.json").write_text('{"<pad>": 0, "A": 1}')
    eng = Wav2Vec2Engine(Settings(wav2vec2={"model_path": broken}))
    with pytest.raises(EngineUnavailable, match="failed to load"):
        eng.load()


def test_served_through_the_manager_with_eight_threads(model_dir: Path) -> None:
    settings = Settings(
        engines=["wav2vec2"],
        default_engine="wav2vec2",
        preload=False,
        wav2vec2={"model_path": model_dir, "workers": 4},
    )
    manager = EngineManager(settings)
    try:
        report = engine_report(manager, "wav2vec2")
        assert report["available"] and not report["loaded"]
        assert report["capabilities"]["word_timestamps"] is True
        assert report["capabilities"]["languages"] == "one, set by the model"  # none configured
        names = [
            "pocketsphinx__001.wav",
            "pocketsphinx__002.wav",
            "speechbrain__spk1_snt1.wav",
            "deepspeech__LDC93S1.wav",
        ] * 2
        audios = [_audio(n) for n in names]
        sequential = [manager.transcribe(a).text for a in audios]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(manager.transcribe, audios))
        assert [r.text for r in results] == sequential
        assert {r.engine for r in results} == {"wav2vec2"}
        assert engine_report(manager, "wav2vec2")["loaded"]
    finally:
        manager.close()


def test_openai_client_picks_wav2vec2_and_gets_its_word_times(
    model_dir: Path, engine: Wav2Vec2Engine
) -> None:
    import openai

    settings = Settings(
        engines=["wav2vec2"], default_engine="wav2vec2", wav2vec2={"model_path": model_dir}
    )
    manager = EngineManager(settings)
    try:
        with (
            LiveServer(settings, manager) as live,
            openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0) as client,
        ):
            path = corpus_file("deepspeech__LDC93S1_pcms16le_1_8000.wav")  # 8 kHz: resampled
            with path.open("rb") as fh:
                result = client.audio.transcriptions.create(
                    model="wav2vec2",
                    file=fh,
                    response_format="verbose_json",
                    timestamp_granularities=["word"],
                )
            direct = engine.transcribe(decode_audio(path).samples, TranscribeOptions())
            assert result.text == direct.text
            assert [(w.word, w.start, w.end) for w in result.words or []] == [
                (w.word, w.start, w.end) for w in direct.words
            ]
            models = {m.id for m in client.models.list()}
            assert "wav2vec2" in models
    finally:
        manager.close()


def test_exports_that_take_an_attention_mask_get_one(
    model_dir: Path, engine: Wav2Vec2Engine, tmp_path: Path
) -> None:
    for name in ("vocab.json", "config.json", "tokenizer_config.json", "processor_config.json"):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())
    model = transformers.Wav2Vec2ForCTC.from_pretrained(model_dir).eval()
    export_ctc_onnx(model, tmp_path / "model.onnx", attention_mask=True)
    masked = Wav2Vec2Engine(Settings(wav2vec2={"model_path": tmp_path}))
    masked.load()
    assert masked._needs_mask  # the graph kept the input: without it, run() would fail
    audio = _audio("deepspeech__LDC93S1.wav").samples
    np.testing.assert_allclose(masked.logits(audio), engine.logits(audio), atol=1e-4)
