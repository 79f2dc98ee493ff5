"""OpenAI's shapes, as the official ``openai`` client reads them: usage, verbose_json
fields, error bodies with ``param``, model aliases, and parameters that are either
honoured or refused (never silently ignored). Real server, real models, real audio.

Module-level imports are what the old code had too, so every test shows the behaviour
before and after.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import openai
import pytest

from stts.config import Settings
from stts.evaluation import word_error_rate
from stts.service import EngineManager
from tests.conftest import CORPUS_ITEMS, LiveServer, corpus_file, requires_corpus

pytestmark = [requires_corpus]

JFK = "openai-whisper__jfk.flac"


def _item(name: str) -> Any:
    return next(i for i in CORPUS_ITEMS if i.path.name == name)


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def _post(server: LiveServer, data: dict[str, Any] | list[tuple[str, str]]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        data=data,  # type: ignore[arg-type]
        files={"file": ("jfk.flac", corpus_file(JFK).read_bytes())},
        timeout=120,
    )


# -- item 9: response shapes ----------------------------------------------------------


def test_json_and_verbose_json_carry_usage_in_whole_seconds(client: openai.OpenAI) -> None:
    seconds = math.ceil(_item(JFK).duration)
    with corpus_file(JFK).open("rb") as fh:
        plain = client.audio.transcriptions.create(model="whisper-1", file=fh)
    assert plain.usage is not None and plain.usage.type == "duration"
    assert plain.usage.seconds == seconds
    with corpus_file(JFK).open("rb") as fh:
        verbose = client.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="verbose_json"
        )
    assert verbose.usage is not None and verbose.usage.seconds == seconds


def test_verbose_json_language_name_seek_and_tokens_from_whisper(client: openai.OpenAI) -> None:
    with corpus_file(JFK).open("rb") as fh:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="verbose_json"
        )
    assert result.language == "english"
    assert result.segments
    for seg in result.segments:
        assert seg.tokens and all(isinstance(t, int) and t >= 0 for t in seg.tokens)
        assert isinstance(seg.seek, int) and seg.seek >= 0
        assert seg.avg_logprob < 0 and 0 <= seg.no_speech_prob <= 1
        assert seg.compression_ratio > 0
    # Decoding the JFK clip (11 s, one window) starts at frame 0; later windows later.
    assert result.segments[0].seek == 0
    assert [s.seek for s in result.segments] == sorted(s.seek for s in result.segments)


def test_engines_without_confidences_report_null_not_zero(server: LiveServer) -> None:
    r = _post(server, {"model": "pocketsphinx", "response_format": "verbose_json"})
    assert r.status_code == 200, r.text
    segments = r.json()["segments"]
    assert segments
    for seg in segments:
        assert seg["avg_logprob"] is None
        assert seg["no_speech_prob"] is None
        assert seg["compression_ratio"] is None


def test_timestamp_granularities_without_brackets(server: LiveServer) -> None:
    r = _post(
        server,
        {
            "model": "whisper-1",
            "response_format": "verbose_json",
            "timestamp_granularities": "word",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["words"] and "segments" not in body
    assert word_error_rate([_item(JFK).reference], [" ".join(w["word"] for w in body["words"])]) < (
        0.15
    )
    bad = _post(server, {"response_format": "verbose_json", "timestamp_granularities": "line"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "timestamp_granularities"


def test_logprobs_where_the_engine_has_them_refused_where_not(
    client: openai.OpenAI, server: LiveServer
) -> None:
    with corpus_file(JFK).open("rb") as fh:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=fh, include=["logprobs"]
        )
    assert result.logprobs
    assert all(lp.logprob is not None and lp.logprob <= 0 for lp in result.logprobs)
    words = " ".join(lp.token or "" for lp in result.logprobs)
    assert word_error_rate([_item(JFK).reference], [words]) < 0.15
    for data in (
        {"model": "pocketsphinx", "include[]": "logprobs"},  # no word probabilities
        {"include[]": "logprobs", "response_format": "verbose_json"},  # OpenAI: json only
        {"include[]": "logprobs", "stream": "true"},
        {"include": "everything"},
    ):
        r = _post(server, data)
        assert r.status_code == 400, (data, r.text)
        assert r.json()["error"]["param"] == "include"


def test_chunking_strategy_is_honoured_or_refused(
    client: openai.OpenAI, server: LiveServer
) -> None:
    for strategy in ("auto", {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 500}):
        with corpus_file(JFK).open("rb") as fh:
            result = client.audio.transcriptions.create(
                model="whisper-1",
                file=fh,
                chunking_strategy=strategy,  # type: ignore[arg-type]
            )
        assert word_error_rate([_item(JFK).reference], [result.text]) < 0.15
    as_json = _post(server, {"chunking_strategy": json.dumps({"type": "server_vad"})})
    assert as_json.status_code == 200, as_json.text
    sphinx_auto = _post(server, {"model": "pocketsphinx", "chunking_strategy": "auto"})
    assert sphinx_auto.status_code == 200, sphinx_auto.text
    for data in (
        {"chunking_strategy": "sometimes"},
        {"chunking_strategy[type]": "client_vad"},
        {"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "2"},
        {"model": "pocketsphinx", "chunking_strategy[type]": "server_vad",
         "chunking_strategy[threshold]": "0.4"},
    ):  # fmt: skip
        r = _post(server, data)
        assert r.status_code == 400, (data, r.text)
        assert r.json()["error"]["param"] == "chunking_strategy"


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_stream_with_a_subtitle_format_is_400(server: LiveServer, fmt: str) -> None:
    r = _post(server, {"stream": "true", "response_format": fmt})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "stream"


def test_verbose_stream_sends_each_segment_with_its_times_before_its_delta(
    server: LiveServer,
) -> None:
    r = _post(
        server,
        {
            "stream": "true",
            "response_format": "verbose_json",
            "timestamp_granularities[]": ["word", "segment"],
            "language": "en",
        },
    )
    assert r.status_code == 200, r.text
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    segments = [e for e in events if e["type"] == "transcript.text.segment"]
    assert segments and kinds[-1] == "transcript.text.done"
    # Each segment event comes right before the delta of its text.
    for i, kind in enumerate(kinds[:-1]):
        if kind == "transcript.text.segment":
            assert kinds[i + 1] == "transcript.text.delta"
            assert events[i + 1]["delta"].strip() == events[i]["text"].strip()
    done = events[-1]
    body = done["verbose_json"]
    assert done["text"] == body["text"]
    assert [(s["start"], s["end"]) for s in segments] == [
        (s["start"], s["end"]) for s in body["segments"]
    ]
    assert all(seg["words"] for seg in segments) and body["words"]
    assert [w["word"] for s in segments for w in s["words"]] == [w["word"] for w in body["words"]]


def test_streamed_done_event_carries_usage(client: openai.OpenAI) -> None:
    with corpus_file(JFK).open("rb") as fh:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=fh, stream=True))
    done = events[-1]
    assert done.type == "transcript.text.done"
    usage: Any = done.usage
    assert usage is not None and usage.type == "duration"
    assert usage.seconds == math.ceil(_item(JFK).duration)


# -- item 9: model aliases ------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "gpt-4o-mini-transcribe"])
def test_newer_openai_model_names_are_aliases_of_the_default_whisper(
    client: openai.OpenAI, model: str
) -> None:
    assert model in {m.id for m in client.models.list().data}
    assert client.models.retrieve(model).id == model
    with corpus_file(JFK).open("rb") as fh:
        raw = client.audio.transcriptions.with_raw_response.create(model=model, file=fh)
    assert raw.headers["x-stt-engine"] == "whisper" and raw.headers["x-stt-model"] == "base"
    assert word_error_rate([_item(JFK).reference], [raw.parse().text]) < 0.15


def test_aliases_are_a_setting(settings: Settings) -> None:
    from stts.catalogue import model_ids, resolve_model

    custom = settings.model_copy(
        update={"model_aliases": {"whisper-1": "whisper", "house-asr": "pocketsphinx"}}
    )
    manager = EngineManager(custom)
    try:
        assert resolve_model(manager, "house-asr")[0] == "pocketsphinx"
        assert resolve_model(manager, "whisper-1") == ("whisper", "base")
        ids = model_ids(manager)
        assert "house-asr" in ids and "gpt-4o-transcribe" not in ids
    finally:
        manager.close()


# -- item 9: error bodies --------------------------------------------------------------


def test_error_bodies_always_have_param(client: openai.OpenAI, server: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as info, corpus_file(JFK).open("rb") as fh:
        client.audio.transcriptions.create(model="nope", file=fh)
    assert info.value.param == "model" and info.value.code == "model_not_found"
    missing = httpx.get(f"{server.url}/v1/no-such-route", timeout=10).json()["error"]
    assert "param" in missing and missing["param"] is None
    temperature = _post(server, {"temperature": "3"}).json()["error"]
    assert temperature["param"] == "temperature"
    fmt = _post(server, {"response_format": "docx"}).json()["error"]
    assert fmt["param"] == "response_format"


# -- item 10: error bodies never echo unbounded input nor Python internals ------------


def test_a_huge_model_value_is_not_echoed_back(server: LiveServer) -> None:
    huge = "m" * 1_000_000
    r = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        data={"model": huge},
        files={"file": ("jfk.flac", b"not read")},
        timeout=60,
    )
    assert r.status_code == 404
    assert len(r.content) < 2048 and "mmmm" in r.json()["error"]["message"]
    retrieve = httpx.get(f"{server.url}/v1/models/{'x' * 50_000}", timeout=60)
    assert retrieve.status_code == 404 and len(retrieve.content) < 2048
    engine = httpx.get(f"{server.url}/api/v1/engines/{'e' * 50_000}", timeout=60)
    assert engine.status_code == 404 and len(engine.content) < 2048


def test_validation_errors_name_the_field_not_python_types(server: LiveServer) -> None:
    # The file sent as a plain form field instead of a file part.
    r = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        data={"file": "just text", "model": "whisper-1"},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "<class" not in r.text and "UploadFile" not in r.text
    assert error["param"] == "file" and "file" in error["message"]
    long_language = _post(server, {"language": "e" * 10_000})
    assert long_language.status_code == 400 and len(long_language.content) < 2048
    assert long_language.json()["error"]["param"] == "language"
