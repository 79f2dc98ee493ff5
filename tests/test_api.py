"""The HTTP API on a real uvicorn server on 127.0.0.1, with the official openai client."""

from __future__ import annotations

import concurrent.futures
import io
import math
import re
import select
import socket
import time
import wave
from collections.abc import Iterator

import httpx
import openai
import pytest

from stts.config import Settings
from stts.engines.registry import register_engine, unregister_engine
from stts.evaluation import normalize_text
from tests.conftest import LiveServer, corpus_file, requires_corpus
from tests.fault_engines import TONE_SECOND_PCM16, AlwaysFailsEngine, SlowEngine

pytestmark = [pytest.mark.slow, requires_corpus]

JFK_PHRASE = "ask not what your country can do for you"
SRT_TIME = r"\d{2}:\d{2}:\d{2},\d{3}"
VTT_TIME = r"\d{2}:\d{2}:\d{2}\.\d{3}"


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def _seconds(stamp: str) -> float:
    h, m, rest = stamp.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(rest)


# -- OpenAI-compatible routes through the official client ------------------------------


def test_openai_json_and_text(client: openai.OpenAI) -> None:
    with corpus_file("openai-whisper__jfk.flac").open("rb") as fh:
        result = client.audio.transcriptions.create(model="whisper-1", file=fh)
    assert JFK_PHRASE in normalize_text(result.text)
    with corpus_file("openai-whisper__jfk.flac").open("rb") as fh:
        text = client.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="text"
        )
    assert JFK_PHRASE in normalize_text(str(text))


@pytest.mark.parametrize(("fmt", "pattern"), [("srt", SRT_TIME), ("vtt", VTT_TIME)])
def test_openai_subtitles_are_well_formed_and_monotonic(
    client: openai.OpenAI, fmt: str, pattern: str
) -> None:
    with corpus_file("ort-extensions__1272-141231-0002.mp3").open("rb") as fh:
        body = str(
            client.audio.transcriptions.create(model="whisper-1", file=fh, response_format=fmt)
        )  # type: ignore[call-overload]
    if fmt == "vtt":
        assert body.startswith("WEBVTT\n\n")
    cues = re.findall(rf"^({pattern}) --> ({pattern})$", body, flags=re.M)
    assert len(cues) >= 1
    last_end = 0.0
    for start, end in cues:
        assert last_end <= _seconds(start) < _seconds(end)
        last_end = _seconds(end)
    assert last_end <= 13.5
    if fmt == "srt":
        numbers = re.findall(r"^(\d+)$", body, flags=re.M)
        assert numbers == [str(i) for i in range(1, len(cues) + 1)]


def test_openai_verbose_json_with_word_and_segment_timestamps(client: openai.OpenAI) -> None:
    with corpus_file("openai-whisper__jfk.flac").open("rb") as fh:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=fh,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert result.language == "english"  # OpenAI writes the name
    assert result.duration == pytest.approx(11.0, abs=0.05)
    assert result.segments and result.words
    assert all(s.start < s.end for s in result.segments)
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    assert "ask" in [w.word.lower().strip(",") for w in result.words]


def test_openai_verbose_json_segments_only_by_default(client: openai.OpenAI) -> None:
    with corpus_file("deepspeech__LDC93S1.wav").open("rb") as fh:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="verbose_json", language="en"
        )
    assert result.segments
    assert not getattr(result, "words", None)


# This openai release marks translations.create as deprecated; the endpoint is still served.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_openai_translation(client: openai.OpenAI) -> None:
    with corpus_file("coqui-tts__LJ001-0001.wav").open("rb") as fh:
        result = client.audio.translations.create(model="whisper-1", file=fh)
    assert "arts and crafts" in normalize_text(result.text)


def test_openai_streaming_deltas_then_done(client: openai.OpenAI) -> None:
    with corpus_file("openai-whisper__jfk.flac").open("rb") as fh:
        stream = client.audio.transcriptions.create(model="whisper-1", file=fh, stream=True)
        events = list(stream)
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done"
    assert "transcript.text.delta" in types
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert normalize_text(deltas) == normalize_text(events[-1].text)
    assert JFK_PHRASE in normalize_text(events[-1].text)


def test_openai_models_and_engine_selection_by_model(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert {"whisper-1", "whisper", "whisper:base", "pocketsphinx"} <= set(ids)
    assert client.models.retrieve("whisper:base").id == "whisper:base"
    with corpus_file("pocketsphinx__goforward.raw").open("rb") as fh:
        raw = client.audio.transcriptions.with_raw_response.create(
            model="pocketsphinx", file=("go.raw", fh.read(), "audio/L16; rate=16000")
        )
    # Headerless PCM is accepted when the file part is typed audio/L16 with its rate.
    assert raw.http_response.status_code == 200
    assert raw.http_response.headers["x-stt-engine"] == "pocketsphinx"
    assert normalize_text(raw.parse().text) == "go forward ten meters"


def test_openai_unknown_model_is_a_404_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        with corpus_file("deepspeech__LDC93S1.wav").open("rb") as fh:
            client.audio.transcriptions.create(model="gpt-4o-transcribe-nope", file=fh)
    body = info.value.body
    assert isinstance(body, dict) and body.get("code") == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_engine_that_answered_is_in_headers(server: LiveServer) -> None:
    with corpus_file("pocketsphinx__001.wav").open("rb") as fh:
        r = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            files={"file": fh},
            data={"model": "pocketsphinx"},
            timeout=60,
        )
    assert r.status_code == 200
    assert r.headers["x-stt-engine"] == "pocketsphinx" and r.headers["x-stt-fallback"] == "false"
    assert normalize_text(r.json()["text"]) == "ten of clubs"


# -- legacy routes, curl -F speech=@file style ------------------------------------------


def _speech(name: str) -> dict[str, tuple[str, bytes, str]]:
    path = corpus_file(name)
    return {"speech": (path.name, path.read_bytes(), "application/octet-stream")}


def test_legacy_v1_default_engine(server: LiveServer) -> None:
    r = httpx.post(
        f"{server.url}/api/v1/stt", files=_speech("openai-whisper__jfk.flac"), timeout=60
    )
    assert r.status_code == 200
    body = r.json()
    assert JFK_PHRASE in normalize_text(body["text"])
    assert body["engine"] == "whisper" and body["fallback"] is False and body["time"] > 0
    # Server-Timing splits the request: decoding, waiting for a worker, the engine, total
    stages = {
        name: float(dur.removeprefix("dur="))
        for name, dur in (part.strip().split(";") for part in r.headers["server-timing"].split(","))
    }
    assert set(stages) == {"decode", "queue", "engine", "total"}
    assert 0 < stages["decode"] < stages["engine"] < stages["total"]
    assert 0 <= stages["queue"] < stages["engine"]
    assert stages["decode"] + stages["queue"] + stages["engine"] <= stages["total"]
    assert stages["queue"] + stages["engine"] == pytest.approx(body["time"] * 1000, abs=1.0)


def test_legacy_engine_by_query_header_and_path(server: LiveServer) -> None:
    files = _speech("pocketsphinx__003.wav")
    by_query = httpx.post(f"{server.url}/api/v1/stt?engine=pocketsphinx", files=files, timeout=60)
    by_header = httpx.post(
        f"{server.url}/api/v1/stt",
        files=files,
        headers={"X-STT-Engine": "pocketsphinx"},
        timeout=60,
    )
    by_path = httpx.post(f"{server.url}/api/v2/stt/pocketsphinx", files=files, timeout=60)
    for r in (by_query, by_header, by_path):
        assert r.status_code == 200, r.text
        assert r.json()["engine"] == "pocketsphinx"
        assert normalize_text(r.json()["text"]) == "seven of clubs"


def test_legacy_raw_body_with_l16_content_type(server: LiveServer) -> None:
    data = corpus_file("pocketsphinx__goforward.raw").read_bytes()
    r = httpx.post(
        f"{server.url}/api/v2/stt/pocketsphinx",
        content=data,
        headers={"Content-Type": "audio/L16; rate=16000; channels=1"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert normalize_text(r.json()["text"]) == "go forward ten meters"


def test_engines_listing_is_cheap_and_complete(server: LiveServer) -> None:
    r = httpx.get(f"{server.url}/api/v1/engines", timeout=10)
    body = r.json()
    assert body["default"] == "whisper"
    assert {"whisper", "pocketsphinx", "vosk"} <= set(body["all"])
    assert {"whisper", "pocketsphinx"} <= set(body["available"])
    vosk = body["details"]["vosk"]
    assert vosk["available"] is False and vosk["reason"]
    one = httpx.get(f"{server.url}/api/v1/engines/whisper", timeout=10).json()
    assert one["capabilities"]["translation"] is True and one["installed"] is True
    assert httpx.get(f"{server.url}/api/v1/engines/nope", timeout=10).status_code == 404


def test_health_ready_and_docs(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/ready").status_code == 200
    assert httpx.get(f"{server.url}/docs").status_code == 200
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/audio/transcriptions" in schema["paths"]


# -- bad input over HTTP -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        (b"", 400, "empty_audio"),
        (bytes(range(256)) * 40, 415, "unsupported_media"),
        (b"just some text, renamed to .wav\n" * 20, 415, "unsupported_media"),
    ],
)
def test_bad_audio_gets_a_clear_json_error(
    server: LiveServer, payload: bytes, status: int, code: str
) -> None:
    for url, field in (
        (f"{server.url}/api/v1/stt", "speech"),
        (f"{server.url}/v1/audio/transcriptions", "file"),
    ):
        r = httpx.post(url, files={field: ("a.wav", payload, "audio/wav")}, timeout=30)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["code"] == code and error["message"]
        assert "Traceback" not in r.text and "/work" not in r.text


def test_missing_file_field_and_bad_parameters_are_400(server: LiveServer) -> None:
    r = httpx.post(f"{server.url}/v1/audio/transcriptions", data={"model": "whisper-1"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    files = {"file": ("a.wav", corpus_file("pocketsphinx__001.wav").read_bytes())}
    r = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        files=files,
        data={"model": "whisper-1", "response_format": "docx"},
        timeout=10,
    )
    assert r.status_code == 400
    r = httpx.post(
        f"{server.url}/api/v1/stt?engine=nope", files=_speech("pocketsphinx__001.wav"), timeout=10
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "engine_not_found"


def _read_response(sock: socket.socket, data: bytes = b"") -> bytes:
    """Read one HTTP/1.1 response with a Content-Length from a raw socket."""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def test_oversized_upload_is_refused_before_it_is_read(settings: Settings, manager) -> None:  # type: ignore[no-untyped-def]
    small = Settings(cache_dir=settings.cache_dir, audio={"max_bytes": 50_000})
    with LiveServer(small, manager) as live:
        # Declared too large: answered 413 without the body ever being sent.
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(
                b"POST /api/v1/stt HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                b"boundary=b\r\nContent-Length: 500000000\r\n\r\n"
            )
            reply = _read_response(sock).decode()
        assert reply.startswith("HTTP/1.1 413"), reply
        assert '"audio_too_large"' in reply
        # Chunked (no Content-Length): answered 413 while the client is still sending.
        with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
            sock.sendall(
                b"POST /api/v1/stt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
            )
            head = b'--b\r\nContent-Disposition: form-data; name="speech"; filename="a.wav"\r\n\r\n'
            sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
            chunk = b"\0" * 16384
            sent, total = 0, 10_000_000
            reply = b""
            while sent < total:
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                except OSError:
                    break  # the server closed the connection on us
                sent += len(chunk)
                if select.select([sock], [], [], 0)[0]:
                    reply = sock.recv(4096)
                    break
            sock.settimeout(5)
            reply = _read_response(sock, reply)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert sent < total / 2, f"sent {sent} bytes before the server answered"


# -- load and faults -----------------------------------------------------------------------


@pytest.fixture
def fault_server(settings: Settings) -> Iterator[LiveServer]:
    for cls in (AlwaysFailsEngine, SlowEngine):
        register_engine(cls.name, cls)
    SlowEngine.delay, SlowEngine.finished, SlowEngine.cancelled = 0.5, 0, 0
    conf = Settings(
        cache_dir=settings.cache_dir,
        engines=["pocketsphinx", "fault-fails", "fault-slow"],
        default_engine="pocketsphinx",
        fallback=["pocketsphinx"],
        plugins={"fault-slow": {"workers": 1, "queue_size": 3}},
    )
    with LiveServer(conf) as live:
        yield live
    for cls in (AlwaysFailsEngine, SlowEngine):
        unregister_engine(cls.name)


def test_fallback_over_http_says_which_engine_answered(fault_server: LiveServer) -> None:
    r = httpx.post(
        f"{fault_server.url}/api/v2/stt/fault-fails",
        files=_speech("pocketsphinx__001.wav"),
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["engine"] == "pocketsphinx" and body["fallback"] is True
    assert normalize_text(body["text"]) == "ten of clubs"


def test_twenty_concurrent_requests_with_a_queue_of_four(fault_server: LiveServer) -> None:
    """workers 1 + queue 3 = 4 admitted; the rest get 503 + Retry-After; none is lost."""
    files = _speech("pocketsphinx__001.wav")

    def call(_: int) -> httpx.Response:
        return httpx.post(f"{fault_server.url}/api/v2/stt/fault-slow", files=files, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(call, range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    ok = [r for r in responses if r.status_code == 200]
    busy = [r for r in responses if r.status_code == 503]
    assert len(ok) >= 4 and busy, statuses
    assert all(r.json()["text"] == "slow result" for r in ok)
    assert all(int(r.headers["Retry-After"]) >= 1 for r in busy)
    assert all(r.json()["error"]["code"] == "overloaded" for r in busy)
    assert SlowEngine.finished == len(ok)


def test_client_disconnect_stops_the_engine(fault_server: LiveServer) -> None:
    SlowEngine.delay = 5.0
    data = corpus_file("pocketsphinx__001.wav").read_bytes()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{fault_server.url}/api/v2/stt/fault-slow",
            files={"speech": ("a.wav", data)},
            timeout=httpx.Timeout(10, read=0.5),
        )
    deadline = time.monotonic() + 4
    while SlowEngine.cancelled == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert SlowEngine.cancelled == 1 and SlowEngine.finished == 0


@pytest.fixture(scope="module")
def strict_server(settings: Settings) -> Iterator[LiveServer]:
    """No fallback, a 1 s deadline, 3 s of audio at most: each error is really raised."""
    for cls in (AlwaysFailsEngine, SlowEngine):
        register_engine(cls.name, cls)
    conf = Settings(
        cache_dir=settings.cache_dir,
        engines=["fault-slow", "fault-fails"],
        default_engine="fault-slow",
        timeout_base_s=1.0,
        timeout_per_audio_s=0.0,
        audio={"max_duration_s": 3.0},
        plugins={"fault-slow": {"workers": 1, "queue_size": 0}},
    )
    with LiveServer(conf) as live:
        yield live
    for cls in (AlwaysFailsEngine, SlowEngine):
        unregister_engine(cls.name)


def _wav(seconds: float) -> bytes:
    """A quiet tone as a WAV file (the fault engines answer it; it is not silence)."""
    buf = io.BytesIO()
    tone = (TONE_SECOND_PCM16 * math.ceil(seconds))[: int(seconds * 16_000) * 2]
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(tone)
    return buf.getvalue()


def _wait_in_flight(server: LiveServer, engine: str, busy: bool) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        report = httpx.get(f"{server.url}/api/v1/engines", timeout=10).json()["details"][engine]
        if (report["in_flight"] > 0) == busy:
            return
        time.sleep(0.02)
    raise AssertionError(f"{engine} never became {'busy' if busy else 'idle'}")


def _wait_busy(server: LiveServer, engine: str) -> None:
    """Until a request holds the engine's place (observed, not slept for)."""
    _wait_in_flight(server, engine, busy=True)


def _wait_idle(server: LiveServer, engine: str) -> None:
    """Until the engine's worker let go of the last request (a 504 keeps its place)."""
    _wait_in_flight(server, engine, busy=False)


def test_engine_failure_is_500_and_a_deadline_is_504_over_http(strict_server: LiveServer) -> None:
    url = f"{strict_server.url}/v1/audio/transcriptions"
    failed = httpx.post(
        url, files={"file": ("a.wav", _wav(1))}, data={"model": "fault-fails"}, timeout=30
    )
    assert failed.status_code == 500, failed.text
    assert failed.json()["error"]["code"] == "transcription_failed"
    assert "fault-fails" in failed.json()["error"]["message"]
    SlowEngine.delay, SlowEngine.cancelled, SlowEngine.finished = 10.0, 0, 0
    try:
        timed_out = httpx.post(
            url, files={"file": ("a.wav", _wav(1))}, data={"model": "fault-slow"}, timeout=30
        )
        assert timed_out.status_code == 504, timed_out.text
        assert timed_out.json()["error"]["code"] == "timeout"
        _wait_idle(strict_server, "fault-slow")
        assert SlowEngine.cancelled == 1 and SlowEngine.finished == 0  # told to stop
    finally:
        SlowEngine.delay = 0.0


def test_audio_longer_than_max_duration_is_413_over_http(strict_server: LiveServer) -> None:
    SlowEngine.delay = 0.0
    ok = httpx.post(f"{strict_server.url}/api/v1/stt", files={"speech": ("a.wav", _wav(2))})
    assert ok.status_code == 200 and ok.json()["text"] == "slow result", ok.text
    r = httpx.post(f"{strict_server.url}/api/v1/stt", files={"speech": ("a.wav", _wav(5))})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "audio_too_long"


def test_no_stack_traces_in_any_error(strict_server: LiveServer) -> None:
    """Every error status the API has, each really raised: JSON in the one shape, no
    traceback, no source path, no exception class name."""
    url = strict_server.url
    SlowEngine.delay = 0.0
    speech = {"file": ("a.wav", _wav(1))}
    answers = {
        400: httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", b"")}),
        404: httpx.post(
            f"{url}/v1/audio/transcriptions", files=speech, data={"model": "no-such-model"}
        ),
        413: httpx.post(f"{url}/api/v1/stt", files={"speech": ("a.wav", _wav(5))}),
        415: httpx.post(f"{url}/api/v1/stt", files={"speech": ("a.wav", b"junk" * 100)}),
        500: httpx.post(
            f"{url}/v1/audio/transcriptions", files=speech, data={"model": "fault-fails"}
        ),
    }
    SlowEngine.delay = 10.0
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # One worker, no queue: a request sent while another runs finds no place
            # (503); the one running runs out of time (504).
            running = pool.submit(
                httpx.post, f"{url}/api/v2/stt/fault-slow", files={"speech": ("a.wav", _wav(1))}
            )
            _wait_busy(strict_server, "fault-slow")
            refused = httpx.post(
                f"{url}/api/v2/stt/fault-slow", files={"speech": ("a.wav", _wav(1))}
            )
            pair = [refused, running.result(60)]
        _wait_idle(strict_server, "fault-slow")
    finally:
        SlowEngine.delay = 0.0
    answers.update({r.status_code: r for r in pair})
    assert sorted(answers) == [400, 404, 413, 415, 500, 503, 504], {
        s: r.text for s, r in answers.items()
    }
    for status, r in answers.items():
        error = r.json()["error"]
        assert error["message"] and error["code"], (status, r.text)
        for leak in ("Traceback", 'File "', "/stts/", "Error:", "Exception"):
            assert leak not in r.text, (status, r.text)
