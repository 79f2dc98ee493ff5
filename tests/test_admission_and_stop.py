"""Admission before decoding, a graceful stop that keeps its deadline, streams that never
mix two engines, and the small drain details (issue 11, items 1, 2, 6, 7, 14, 15).

The attacks come from outside, against a real ``stts serve`` process where memory or
process exit is what is measured, and against a real server in this process elsewhere.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import logging
import signal
import socket
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import psutil
import pytest

from stts.audio import decode_audio
from stts.config import Settings
from stts.engines.registry import register_engine, unregister_engine
from stts.errors import TranscriptionFailed
from stts.service import EngineManager
from stts.testing import free_port, spawn_server
from tests.conftest import LiveServer, corpus_file, requires_corpus
from tests.fault_engines import (
    TONE_SECOND,
    AlwaysFailsEngine,
    FailsMidStreamEngine,
    SlowEngine,
)

JFK = "openai-whisper__jfk.flac"


def silent_opus(seconds: float) -> bytes:
    """Ogg/Opus of digital silence, ~1.35 MB per hour: one encoded packet repeated."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=48_000)
        stream.layout = "mono"
        stream.bit_rate = 6_000
        packets = []
        for _ in range(3):  # the encoder's first packets differ; the steady one repeats
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 48_000), np.int16), format="s16", layout="mono"
            )
            frame.sample_rate = 48_000
            packets += list(stream.encode(frame))
        steady = packets[-1]
        step = int(steady.duration or 960)
        pts = 0
        for _ in range(int(seconds * 48_000 / step)):
            packet = av.Packet(bytes(steady))
            packet.pts = packet.dts = pts
            packet.duration = step
            packet.time_base = steady.time_base
            packet.stream = stream
            out.mux(packet)
            pts += step
    return buf.getvalue()


def wav_bytes(samples: np.ndarray) -> bytes:
    """16 kHz mono 16-bit WAV."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def long_speech_wav(minutes: float) -> bytes:
    """Real speech (the JFK clip) repeated to ``minutes`` of audio."""
    speech = decode_audio(corpus_file(JFK)).samples
    reps = int(minutes * 60 * 16_000 / len(speech)) + 1
    return wav_bytes(np.tile(speech, reps)[: int(minutes * 60 * 16_000)])


def _timings(response: httpx.Response) -> set[str]:
    header = response.headers.get("server-timing", "")
    return {part.split(";")[0].strip() for part in header.split(",") if part.strip()}


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return stderr


# -- item 1: admission before decoding ------------------------------------------------


@pytest.mark.slow
@requires_corpus
def test_parallel_hour_long_uploads_are_refused_before_decoding(cache_dir: Path) -> None:
    """Eight 1.35 MB Opus files of an hour of silence each at a server with one worker
    and no queue: one is admitted, seven get 503 `overloaded` without being decoded, and
    the server's memory grows by about one request's audio, not eight."""
    opus = silent_opus(3590)
    assert len(opus) < 1_500_000
    port = free_port()
    proc = spawn_server(
        port,
        {
            "STTS_CACHE_DIR": str(cache_dir),
            "STTS_ENGINES": "whisper",
            "STTS_WHISPER__WORKERS": "1",
            "STTS_WHISPER__QUEUE_SIZE": "0",
        },
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    server = psutil.Process(proc.pid)
    try:
        baseline = server.memory_info().rss
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, server.memory_info().rss)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        barrier = threading.Barrier(8)

        def post(i: int) -> httpx.Response:
            barrier.wait()
            return httpx.post(
                f"{url}/v1/audio/transcriptions",
                files={"file": (f"{i}.opus", opus, "audio/ogg")},
                data={"model": "whisper-1"},
                timeout=300,
            )

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(post, range(8)))
        done.set()
        sampler.join()
    finally:
        stderr = _stop(proc)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [503] * 7, (statuses, stderr[-2000:])
    for refused in (r for r in responses if r.status_code == 503):
        assert refused.json()["error"]["code"] == "overloaded"
        assert int(refused.headers["retry-after"]) >= 1
        # Refused before decoding: its Server-Timing has no decode stage.
        assert "decode" not in _timings(refused)
    (admitted,) = (r for r in responses if r.status_code == 200)
    assert admitted.json()["text"] == ""  # an hour of digital silence: no words
    assert "decode" in _timings(admitted)
    one_request_audio = 3590 * 16_000 * 4  # float32 samples
    grown = peak - baseline
    print(f"server RSS {baseline / 2**20:.0f} MiB -> peak {peak / 2**20:.0f} MiB")
    assert grown < 2 * one_request_audio, f"RSS grew {grown / 2**20:.0f} MiB"


# -- item 2: a graceful stop that keeps its deadline ---------------------------------


@pytest.mark.slow
@requires_corpus
def test_sigterm_answers_long_requests_in_json_and_exits_within_grace(cache_dir: Path) -> None:
    """Grace 3 s, two 10-minute requests running (one streamed): on SIGTERM a new request
    is refused at once, at the deadline the plain request gets a JSON 503
    `shutting_down` with Retry-After, the stream ends with an `error` event, and the
    process exits soon after: it does not wait for the ten minutes of decoding."""
    grace = 3.0
    audio = long_speech_wav(10)
    port = free_port()
    proc = spawn_server(
        port,
        {
            "STTS_CACHE_DIR": str(cache_dir),
            "STTS_ENGINES": "whisper",
            "STTS_WHISPER__WORKERS": "2",
            "STTS_SHUTDOWN_GRACE_S": str(grace),
        },
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    events: list[dict[str, object]] = []
    first_delta = threading.Event()
    plain: list[httpx.Response] = []

    def stream() -> None:
        with httpx.stream(
            "POST",
            f"{url}/v1/audio/transcriptions",
            files={"file": ("long.wav", audio, "audio/wav")},
            data={"model": "whisper-1", "stream": "true", "language": "en"},
            timeout=300,
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    first_delta.set()

    def post() -> None:
        plain.append(
            httpx.post(
                f"{url}/v1/audio/transcriptions",
                files={"file": ("long.wav", audio, "audio/wav")},
                data={"model": "whisper-1", "language": "en"},
                timeout=300,
            )
        )

    threads = [threading.Thread(target=stream), threading.Thread(target=post)]
    try:
        for thread in threads:
            thread.start()
        assert first_delta.wait(240), "the stream never started"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            late = httpx.get(f"{url}/v1/models", timeout=5)
            assert late.status_code == 503
            assert late.json()["error"]["code"] == "shutting_down"
            assert int(late.headers["retry-after"]) >= 1
        except httpx.TransportError:
            pass  # the listener is already closed: also a refusal
        code = proc.wait(120)
        exited = time.monotonic() - sent
        for thread in threads:
            thread.join(60)
    finally:
        stderr = _stop(proc)
    print(f"exit {exited:.2f} s after SIGTERM (grace {grace} s)")
    assert code == 0, stderr[-3000:]
    # The issue asks for grace + 2 s; the bound here leaves room for a loaded CI machine
    # and still tells it apart from waiting for ten minutes of audio to be transcribed.
    assert exited < grace + 6, f"exited {exited:.1f} s after SIGTERM"
    assert plain and plain[0].status_code == 503, plain[0].text if plain else "no answer"
    assert plain[0].headers["content-type"].startswith("application/json")
    assert plain[0].json()["error"]["code"] == "shutting_down"
    assert int(plain[0].headers["retry-after"]) >= 1
    assert events[0]["type"] == "transcript.text.delta"
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["code"] == "shutting_down"  # type: ignore[index]
    assert "Traceback" not in stderr


# -- item 6: a stream never mixes two engines ------------------------------------------


@pytest.fixture
def fault_stream_server(tmp_path: Path) -> Iterator[LiveServer]:
    """FAULT-INJECTION engines: one breaks after a segment, one before; SlowEngine answers."""
    fakes = (FailsMidStreamEngine, AlwaysFailsEngine, SlowEngine)
    for cls in fakes:
        register_engine(cls.name, cls)
    SlowEngine.delay = 0.0
    conf = Settings(
        cache_dir=tmp_path,
        engines=[FailsMidStreamEngine.name, AlwaysFailsEngine.name, SlowEngine.name],
        default_engine=SlowEngine.name,
        fallback=[SlowEngine.name],
    )
    try:
        with LiveServer(conf) as live:
            yield live
    finally:
        for cls in fakes:
            unregister_engine(cls.name)


def _sse(response: httpx.Response) -> list[dict[str, object]]:
    return [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")
    ]


def test_stream_does_not_fall_back_after_its_first_delta(fault_stream_server: LiveServer) -> None:
    response = httpx.post(
        f"{fault_stream_server.url}/v1/audio/transcriptions",
        files={"file": ("tone.wav", wav_bytes(TONE_SECOND), "audio/wav")},
        data={"model": FailsMidStreamEngine.name, "stream": "true"},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["x-stt-engine"] == FailsMidStreamEngine.name
    events = _sse(response)
    assert [e["type"] for e in events] == ["transcript.text.delta", "error"]
    assert events[0]["delta"] == "partial words"
    assert "slow result" not in response.text  # the fallback's words never joined in


def test_stream_falls_back_before_its_first_delta_and_names_who_answered(
    fault_stream_server: LiveServer,
) -> None:
    response = httpx.post(
        f"{fault_stream_server.url}/v1/audio/transcriptions",
        files={"file": ("tone.wav", wav_bytes(TONE_SECOND), "audio/wav")},
        data={"model": AlwaysFailsEngine.name, "stream": "true"},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["x-stt-engine"] == SlowEngine.name
    assert response.headers["x-stt-fallback"] == "true"
    events = _sse(response)
    deltas = "".join(str(e["delta"]) for e in events if e["type"] == "transcript.text.delta")
    assert events[-1]["type"] == "transcript.text.done"
    assert deltas == events[-1]["text"] == "slow result"


def test_stream_error_before_any_delta_keeps_its_status(tmp_path: Path) -> None:
    """No fallback configured: the failure is a JSON 500, not a 200 stream of one error."""
    register_engine(AlwaysFailsEngine.name, AlwaysFailsEngine)
    conf = Settings(
        cache_dir=tmp_path,
        engines=[AlwaysFailsEngine.name],
        default_engine=AlwaysFailsEngine.name,
    )
    try:
        with LiveServer(conf) as live:
            response = httpx.post(
                f"{live.url}/v1/audio/transcriptions",
                files={"file": ("tone.wav", wav_bytes(TONE_SECOND), "audio/wav")},
                data={"model": AlwaysFailsEngine.name, "stream": "true"},
                timeout=60,
            )
    finally:
        unregister_engine(AlwaysFailsEngine.name)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "transcription_failed"


# -- item 7 (service side): digital silence costs no model time ---------------------------


@pytest.mark.slow
def test_ten_minutes_of_digital_zeros_answer_empty_without_the_model(server: LiveServer) -> None:
    zeros = wav_bytes(np.zeros(16_000 * 600, np.float32))
    response = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        files={"file": ("zeros.wav", zeros, "audio/wav")},
        data={"model": "whisper-1"},
        timeout=300,
    )
    assert response.status_code == 200
    assert response.json()["text"] == ""
    assert "engine" not in _timings(response)  # no worker ran


def test_silence_never_reaches_an_engine(tmp_path: Path) -> None:
    register_engine(SlowEngine.name, SlowEngine)
    SlowEngine.delay, SlowEngine.finished = 0.0, 0
    try:
        conf = Settings(cache_dir=tmp_path, engines=[SlowEngine.name], default_engine="fault-slow")
        with EngineManager(conf).session() as mgr:
            quiet = mgr.transcribe(np.zeros(16_000 * 5, np.float32))
            assert SlowEngine.finished == 0
            assert quiet.text == "" and quiet.engine == SlowEngine.name
            assert mgr.transcribe(TONE_SECOND).text == "slow result"
            assert SlowEngine.finished == 1
    finally:
        unregister_engine(SlowEngine.name)


# -- item 14: drain details, stalled bodies -----------------------------------------------


def test_head_health_and_ready_answer_like_get(server: LiveServer) -> None:
    for path in ("/health", "/ready"):
        head = httpx.head(f"{server.url}{path}", timeout=10)
        get = httpx.get(f"{server.url}{path}", timeout=10)
        assert head.status_code == get.status_code == 200
        assert head.content == b""


def test_a_stalled_body_is_answered_408_and_closed(tmp_path: Path) -> None:
    conf = Settings(
        cache_dir=tmp_path,
        engines=["pocketsphinx"],
        default_engine="pocketsphinx",
        body_timeout_s=1.0,
    )
    with LiveServer(conf) as live, socket.create_connection(("127.0.0.1", live.port)) as sock:
        sock.sendall(
            b"POST /api/v1/stt HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
            b"Content-Length: 100000\r\n\r\nRIFF"
        )
        sock.settimeout(60)  # generous: the server must answer on its own, long before
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert json.loads(body)["error"]["code"] == "request_timeout"


def test_413_names_the_configured_limit(tmp_path: Path) -> None:
    conf = Settings(cache_dir=tmp_path, engines=["pocketsphinx"], default_engine="pocketsphinx")
    conf.audio.max_bytes = 1000
    with LiveServer(conf) as live:
        response = httpx.post(
            f"{live.url}/v1/audio/transcriptions",
            files={"file": ("a.wav", b"\0" * 400_000)},
            data={"model": "pocketsphinx"},
            timeout=30,
        )
    assert response.status_code == 413
    assert "1000 bytes" in response.json()["error"]["message"]


# -- item 15: no "trying the next" without a next ---------------------------------------


def test_no_fallback_means_no_promise_of_one_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    register_engine(AlwaysFailsEngine.name, AlwaysFailsEngine)
    try:
        conf = Settings(
            cache_dir=tmp_path, engines=[AlwaysFailsEngine.name], default_engine="fault-fails"
        )
        with EngineManager(conf).session() as mgr, caplog.at_level(logging.WARNING):
            with pytest.raises(TranscriptionFailed):
                mgr.transcribe(TONE_SECOND)
    finally:
        unregister_engine(AlwaysFailsEngine.name)
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert failed and not any("trying the next" in m for m in failed)


# -- item 11 (API side): what a damaged file lost is said, not hidden ----------------------


@requires_corpus
def test_a_damaged_mp3_is_answered_with_a_warning_header(server: LiveServer) -> None:
    data = bytearray(corpus_file("ort-extensions__1272-141231-0002.mp3").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    response = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        files={"file": ("damaged.mp3", bytes(data), "audio/mpeg")},
        data={"model": "pocketsphinx"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.json()["text"]
    warning = response.headers["x-stt-warning"]
    assert warning.isascii() and len(warning) <= 500


# -- a realtime session on SIGTERM gets the grace period, then an error event ----------------


@pytest.mark.slow
@requires_corpus
def test_sigterm_gives_realtime_sessions_the_grace_period(cache_dir: Path) -> None:
    """A real `stts serve`: a session open at SIGTERM is not cut at once (uvicorn closes
    WebSockets with 1012 when it starts shutting down); it gets shutdown_grace_s, then an
    `error` event `shutting_down`, then the close; the process exits soon after."""
    import asyncio
    import base64

    from websockets.asyncio.client import connect

    grace = 3.0
    port = free_port()
    proc = spawn_server(
        port,
        {
            "STTS_CACHE_DIR": str(cache_dir),
            "STTS_ENGINES": "whisper",
            "STTS_SHUTDOWN_GRACE_S": str(grace),
        },
        stderr=subprocess.PIPE,
    )
    tone = (np.sin(np.arange(2400) / 3) * 3000).astype("<i2").tobytes()  # 100 ms, 24 kHz

    async def session() -> tuple[float, list[dict[str, object]]]:
        async with connect(f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription") as ws:
            events = [json.loads(await ws.recv())]  # session.created
            update = {"type": "session.update", "session": {"type": "transcription"}}
            update["session"]["audio"] = {"input": {"turn_detection": None}}  # type: ignore[index]
            await ws.send(json.dumps(update))
            events.append(json.loads(await ws.recv()))
            await ws.send(
                json.dumps(
                    {"type": "input_audio_buffer.append", "audio": base64.b64encode(tone).decode()}
                )
            )
            await asyncio.sleep(0.5)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                async for message in ws:
                    events.append(json.loads(message))
            except Exception:
                pass
            return time.monotonic() - sent, events

    try:
        held, events = asyncio.run(session())
        code = proc.wait(60)
    finally:
        stderr = _stop(proc)
    print(f"session held {held:.2f} s after SIGTERM (grace {grace} s)")
    assert code == 0, stderr[-2000:]
    assert held >= grace - 0.5  # not cut off when the shutdown began
    errors = [e for e in events if e.get("type") == "error"]
    assert errors and errors[-1]["error"]["code"] == "shutting_down"  # type: ignore[index]
