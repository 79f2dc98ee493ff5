"""The requested language: one normalisation for every face, checked against the chosen
engine's real languages before any audio is read, and never retried on a fallback engine.

The HTTP and Wyoming tests use only what the old code had too (they import nothing new
at module level), so they show the behaviour before and after.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stts.config import Settings
from stts.evaluation import word_error_rate
from stts.service import EngineManager
from stts.testing import free_port
from tests.conftest import CORPUS_ITEMS, LiveServer, corpus_file, requires_corpus

pytestmark = [requires_corpus]

JFK = "openai-whisper__jfk.flac"
BAD = ["xx", "zz", "yue"]  # yue: Cantonese, in large-v3's tokenizer but not in base's
GOOD = ["en", "EN", "en-US", "en_us", "english", "English"]


def _reference(name: str) -> str:
    return next(i.reference for i in CORPUS_ITEMS if i.path.name == name)


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def cold(cache_dir: Path) -> Iterator[tuple[LiveServer, EngineManager]]:
    """A server whose Whisper is not loaded and that falls back to PocketSphinx (the
    default engine here, so that it is ready without loading Whisper)."""
    settings = Settings(
        cache_dir=cache_dir,
        engines=["whisper", "pocketsphinx"],
        default_engine="pocketsphinx",
        fallback=["pocketsphinx"],
    )
    manager = EngineManager(settings)
    with LiveServer(settings, manager) as live:
        yield live, manager
    manager.close()


# -- the normalisation and the model's own languages ---------------------------------


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("en", "en"),
        ("EN", "en"),
        ("en-US", "en"),
        ("en_us", "en"),
        ("english", "en"),
        ("Chinese", "zh"),
        ("mandarin", "zh"),
        ("zh-Hant-TW", "zh"),
        ("cantonese", "yue"),
        ("haitian creole", "ht"),
        ("jv", "jw"),  # Whisper spells Javanese jw
        (" de ", "de"),
        ("", None),
        (None, None),
    ],
)
def test_normalisation(value: str | None, code: str | None) -> None:
    from stts.languages import normalize_language

    assert normalize_language(value) == code


def test_the_name_table_is_whispers_and_names_are_openais() -> None:
    from stts.languages import LANGUAGE_NAMES, language_name

    tokenizer = pytest.importorskip("faster_whisper.tokenizer")
    assert set(LANGUAGE_NAMES) == set(tokenizer._LANGUAGE_CODES)
    assert language_name("en") == "english" and language_name("yue") == "cantonese"
    assert language_name("xx") is None


def test_check_language_refuses_with_a_bounded_message() -> None:
    from stts.errors import InvalidLanguage, InvalidRequest
    from stts.languages import LANGUAGE_NAMES, check_language

    many = frozenset(LANGUAGE_NAMES) - {"yue"}
    assert check_language("English", many, "whisper", "base") == "en"
    assert check_language(None, many, "whisper") is None
    with pytest.raises(InvalidLanguage) as info:
        check_language("yue" + "x" * 10_000, many, "whisper", "base")
    assert isinstance(info.value, InvalidRequest)  # not an EngineError: no fallback
    assert len(info.value.message) < 300 and "99 languages" in info.value.message
    with pytest.raises(InvalidLanguage, match="accepts en;"):
        check_language("de", frozenset({"en"}), "pocketsphinx")
    # One language the operator didn't name: any language stts knows is let through.
    assert check_language("de-AT", frozenset(), "vosk") == "de"
    with pytest.raises(InvalidLanguage):
        check_language("xx", frozenset(), "vosk")


def _fake_model(tmp_path: Path, settings: Settings, *, yue: bool, multilingual: bool) -> Path:
    """A CTranslate2 directory with base's config and tokenizer, edited like large-v3's
    (a 100th language token) or like an English-only model's (no lang_ids)."""
    from stts.engines.whisper import EMBEDDED_MODELS, _embedded_sources

    sources = _embedded_sources(EMBEDDED_MODELS["base"])
    if sources is None:
        pytest.skip("the embedded Whisper base model is not installed")
    config = json.loads(sources["config.json"][0].read_text())
    tokenizer = json.loads(sources["tokenizer.json"][0].read_text())
    if yue:
        new_id = max(int(t["id"]) for t in tokenizer["added_tokens"]) + 1
        tokenizer["added_tokens"].append({"id": new_id, "content": "<|yue|>", "special": True})
        config["lang_ids"].append(new_id)
    if not multilingual:
        config.pop("lang_ids")
    model = tmp_path / ("v3" if yue else "en-only")
    model.mkdir()
    (model / "config.json").write_text(json.dumps(config))
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    (model / "model.bin").write_bytes(b"")  # only its presence is checked without a load
    return model


def test_whisper_reports_the_languages_its_model_really_has(
    tmp_path: Path, settings: Settings
) -> None:
    from stts.engines.whisper import WhisperEngine

    v3 = _fake_model(tmp_path, settings, yue=True, multilingual=True)
    en_only = _fake_model(tmp_path, settings, yue=False, multilingual=False)
    dirs = settings.model_copy(
        update={
            "whisper": settings.whisper.model_copy(
                update={"model_dirs": {"large-v3": v3, "en-only": en_only}}
            )
        }
    )
    base = WhisperEngine(dirs, "base").capabilities.languages
    large = WhisperEngine(dirs, "large-v3").capabilities.languages
    assert base is not None and large is not None
    assert len(base) == 99 and "yue" not in base and "en" in base
    assert len(large) == 100 and large == base | {"yue"}
    assert WhisperEngine(dirs, "en-only").capabilities.languages == frozenset({"en"})
    shutil.rmtree(tmp_path / "v3")


# -- HTTP: OpenAI and legacy faces ---------------------------------------------------


@pytest.mark.parametrize("language", BAD)
def test_openai_unknown_language_is_400_invalid_language(
    client: openai.OpenAI, language: str
) -> None:
    with (
        pytest.raises(openai.BadRequestError) as info,
        corpus_file(JFK).open("rb") as fh,
    ):
        client.audio.transcriptions.create(model="whisper-1", file=fh, language=language)
    error = info.value
    assert error.status_code == 400
    assert error.code == "invalid_language" and error.param == "language"
    body: Any = error.body
    assert "en" in body["message"] and len(body["message"]) < 300


@pytest.mark.parametrize("language", GOOD)
def test_openai_locale_case_and_names_mean_the_same_language(
    client: openai.OpenAI, language: str
) -> None:
    with corpus_file(JFK).open("rb") as fh:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=fh, language=language, response_format="verbose_json"
        )
    assert result.language == "english"
    assert word_error_rate([_reference(JFK)], [result.text]) < 0.15


def test_legacy_routes_check_the_language_too(server: LiveServer) -> None:
    data = corpus_file(JFK).read_bytes()
    url = f"{server.url}/api/v1/stt"
    bad = httpx.post(
        url, params={"language": "xx"}, files={"speech": ("a.flac", data)}, timeout=120
    )
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["code"] == "invalid_language"
    sphinx = httpx.post(
        f"{server.url}/api/v2/stt/pocketsphinx",
        params={"language": "de"},
        files={"speech": ("a.flac", data)},
        timeout=120,
    )
    assert sphinx.status_code == 400 and sphinx.json()["error"]["param"] == "language"
    good = httpx.post(
        url, params={"language": "en-US"}, files={"speech": ("a.flac", data)}, timeout=120
    )
    assert good.status_code == 200, good.text
    assert good.json()["language"] == "en"
    assert word_error_rate([_reference(JFK)], [good.json()["text"]]) < 0.15


def test_a_bad_language_is_refused_before_any_work_and_never_falls_back(
    cold: tuple[LiveServer, EngineManager],
) -> None:
    live, manager = cold
    data = corpus_file(JFK).read_bytes()
    for language in ["xx", "klingon", "yue"]:
        r = httpx.post(
            f"{live.url}/v1/audio/transcriptions",
            data={"model": "whisper-1", "language": language},
            files={"file": ("jfk.flac", data)},
            timeout=120,
        )
        assert r.status_code == 400, (language, r.status_code, r.text)
        assert r.json()["error"]["code"] == "invalid_language"
        assert r.headers.get("x-stt-fallback") is None
    # Refused before the upload was read: Whisper never loaded, no engine ran.
    assert not manager.is_loaded("whisper")
    assert all(s.requests == 0 for s in manager.loaded_slots())


# -- Wyoming --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wyoming_port(settings: Settings, manager: EngineManager) -> Iterator[int]:
    pytest.importorskip("wyoming")
    port = free_port()
    wy_settings = settings.model_copy(update={"wyoming_uri": f"tcp://127.0.0.1:{port}"})
    with LiveServer(wy_settings, manager):
        yield port


def _wyoming(port: int, events: list[Any]) -> Any:
    from wyoming.client import AsyncTcpClient

    async def main() -> Any:
        client = AsyncTcpClient("127.0.0.1", port)
        await client.connect()
        try:
            for event in events:
                await client.write_event(event)
            return await asyncio.wait_for(client.read_event(), 120)
        finally:
            await client.disconnect()

    return asyncio.run(main())


def _pcm(path: Path) -> bytes:
    import numpy as np

    from stts.audio import decode_audio

    samples = decode_audio(path).samples
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def _utterance(language: str) -> list[Any]:
    from wyoming.asr import Transcribe
    from wyoming.audio import AudioChunk, AudioStart, AudioStop

    pcm = _pcm(corpus_file(JFK))
    return [
        Transcribe(language=language).event(),
        AudioStart(rate=16000, width=2, channels=1).event(),
        AudioChunk(rate=16000, width=2, channels=1, audio=pcm).event(),
        AudioStop().event(),
    ]


def test_wyoming_advertises_and_accepts_what_http_accepts(wyoming_port: int) -> None:
    from wyoming.asr import Transcript
    from wyoming.error import Error
    from wyoming.info import Describe, Info

    info = Info.from_event(_wyoming(wyoming_port, [Describe().event()]))
    whisper = next(m for m in info.asr[0].models if m.name == "whisper")
    assert len(whisper.languages) == 99 and "yue" not in whisper.languages

    answer = _wyoming(wyoming_port, _utterance("English"))
    assert Transcript.is_type(answer.type), answer
    transcript = Transcript.from_event(answer)
    assert transcript.language == "en"
    assert word_error_rate([_reference(JFK)], [transcript.text]) < 0.15

    for language in ["xx", "yue"]:
        answer = _wyoming(wyoming_port, _utterance(language))
        assert Error.is_type(answer.type), answer
        assert Error.from_event(answer).code == "invalid_language"
