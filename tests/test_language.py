"""Spoken-language identification: library, HTTP route and CLI, on the real corpus.

The corpus is English speech only; French, German and Spanish come from espeak-ng
(tests/speech.py), so a detector that always says "en" fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

import stts
from stts.audio import decode_audio
from stts.errors import InvalidRequest
from stts.service import EngineManager
from tests.conftest import CORPUS_ITEMS, LiveServer, corpus_file, requires_corpus
from tests.speech import SENTENCES, spoken

pytestmark = [pytest.mark.slow, requires_corpus]  # Whisper is loaded

JFK = "openai-whisper__jfk.flac"


def test_english_is_found_in_the_corpus_with_ranked_probabilities(manager: EngineManager) -> None:
    items = [i for i in CORPUS_ITEMS if i.raw is None]
    guesses = [manager.detect_language(decode_audio(i.path), top=3) for i in items]
    english = sum(g.language == "en" for g in guesses)
    assert english == len(items), [
        (i.path.name, g.ranked) for i, g in zip(items, guesses, strict=True)
    ]
    for guess in guesses:
        assert guess.engine == "whisper" and guess.model == "base"
        assert len(guess.ranked) == 3
        probs = [p for _, p in guess.ranked]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert guess.ranked[0] == (guess.language, guess.probability)
    jfk = guesses[[i.path.name for i in items].index(JFK)]
    assert jfk.language == "en" and jfk.probability > 0.8


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_french_german_and_spanish_are_each_named(manager: EngineManager, language: str) -> None:
    guess = manager.detect_language(spoken(SENTENCES[language], language), top=3)
    assert guess.language == language, guess.ranked
    assert guess.probability > 0.5 and guess.ranked[0] == (language, guess.probability)


def test_library_function_and_engines_that_cannot(manager: EngineManager) -> None:
    guess = stts.detect_language(corpus_file(JFK), manager=manager, top=1)
    assert guess.language == "en" and len(guess.ranked) == 1
    with pytest.raises(InvalidRequest, match="cannot detect"):
        manager.detect_language(decode_audio(corpus_file(JFK)), engine="pocketsphinx")


def test_http_route_multipart_raw_body_and_errors(server: LiveServer) -> None:
    url = f"{server.url}/api/v1/detect-language"
    data = corpus_file(JFK).read_bytes()
    r = httpx.post(url, files={"speech": ("jfk.flac", data)}, params={"top": 2}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["language"] == "en" and body["engine"] == "whisper"
    assert body["languages"][0]["language"] == "en" and len(body["languages"]) == 2
    assert body["duration"] == pytest.approx(11.0, abs=0.05)
    assert r.headers["x-stt-engine"] == "whisper"

    raw = httpx.post(url, content=data, headers={"content-type": "audio/flac"}, timeout=60)
    assert raw.status_code == 200 and raw.json()["language"] == "en"

    sphinx = httpx.post(
        url, files={"speech": ("jfk.flac", data)}, params={"engine": "pocketsphinx"}
    )
    assert sphinx.status_code == 400 and "cannot detect" in sphinx.json()["error"]["message"]
    bad = httpx.post(url, files={"speech": ("x.wav", b"RIFF....garbage")}, timeout=30)
    assert bad.status_code in (400, 415) and "error" in bad.json()
    assert httpx.post(url, params={"top": 0}, content=data).status_code == 400


def test_cli_prints_language_per_file_and_fails_on_bad_ones(tmp_path, cache_dir) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stts.cli",
            "detect-language",
            "--json",
            "--top",
            "2",
            str(corpus_file(JFK)),
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "STTS_CACHE_DIR": str(cache_dir)},
    )
    assert proc.returncode == 1, proc.stderr
    first = json.loads(proc.stdout)
    assert first["language"] == "en" and len(first["languages"]) == 2
    assert "bad.wav" in proc.stderr and "Traceback" not in proc.stderr
