"""Durable jobs (issue 15) on a real server on 127.0.0.1, with PocketSphinx (fast) on real
corpus audio: submit -> poll -> result equal to the synchronous answer, progress on a
ten-minute recording, cancel queued and running jobs, quota and size limits, per-key
isolation, signed webhooks to a real loopback receiver (retried after a 500), a
callback host not allowed refused at submission, and a real ``stts serve`` killed with
SIGKILL mid-job that resumes from its checkpoint on restart.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import signal
import sqlite3
import threading
import time
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from stts.audio import decode_audio
from stts.config import Settings
from stts.engines.registry import register_engine, unregister_engine
from stts.testing import free_port, spawn_server
from tests.conftest import CORPUS_ITEMS, LiveServer, corpus_file, requires_corpus
from tests.fault_engines import TONE_SECOND_PCM16, AlwaysFailsEngine

pytestmark = [pytest.mark.slow, requires_corpus]

SECRET = "webhook-secret-for-tests"
ALICE = {"Authorization": "Bearer alice-key-0001"}
BOB = {"Authorization": "Bearer bob-key-0002"}
SHORT = "vosk-api__test.wav"  # 8.3 s: one job step (step_s=10)
TIMEOUT = httpx.Timeout(120.0)


def speech_wav(seconds: float) -> bytes:
    """A 16 kHz mono WAV of ``seconds``, built from the corpus's 16 kHz speech files with
    0.4 s pauses between them (repeated as needed)."""
    clips = [
        decode_audio(item.path).samples
        for item in CORPUS_ITEMS
        if item.sample_rate == 16_000 and item.path.suffix == ".wav" and item.channels == 1
    ]
    pause = np.zeros(int(0.4 * 16_000), np.float32)
    pieces: list[np.ndarray] = []
    total = 0
    target = int(seconds * 16_000)
    while total < target:
        for clip in clips:
            pieces += [clip, pause]
            total += len(clip) + len(pause)
            if total >= target:
                break
    samples = np.concatenate(pieces)[:target]
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


class Receiver:
    """A real HTTP server on 127.0.0.1 that records webhook calls; answers ``statuses`` in
    turn (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.statuses = statuses
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def live(settings: Settings, jobs_dir: Path) -> Iterator[LiveServer]:
    """PocketSphinx, two API keys, webhooks allowed to 127.0.0.1 only, 10 s steps."""
    conf = Settings(
        cache_dir=settings.cache_dir,
        engines=["pocketsphinx"],
        default_engine="pocketsphinx",
        named_api_keys={"alice": "alice-key-0001", "bob": "bob-key-0002"},
        jobs={
            "dir": jobs_dir,
            "step_s": 10,
            "webhook_hosts": ["127.0.0.1"],
            "webhook_secret": SECRET,
            "webhook_backoff_s": 0.2,
        },
    )
    with LiveServer(conf) as server:
        yield server


def submit(
    server: LiveServer,
    data: bytes,
    name: str = "a.wav",
    headers: dict[str, str] = ALICE,
    **fields: str,
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/jobs",
        files={"file": (name, data, "audio/wav")},
        data={"model": "pocketsphinx", **fields},
        headers=headers,
        timeout=TIMEOUT,
    )


def status(server: LiveServer, job_id: str, headers: dict[str, str] = ALICE) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/v1/jobs/{job_id}", headers=headers, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for(
    server: LiveServer, job_id: str, states: tuple[str, ...], limit_s: float = 600
) -> dict[str, Any]:
    """Poll until the job is in one of ``states`` (a hang guard, not a speed test)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        job = status(server, job_id)
        if job["status"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def audio_files(jobs_dir: Path) -> list[str]:
    return sorted(p.name for p in (jobs_dir / "audio").iterdir())


def test_submit_poll_result_in_every_format_equals_the_synchronous_answer(
    live: LiveServer, jobs_dir: Path
) -> None:
    data = corpus_file(SHORT).read_bytes()
    response = submit(live, data, SHORT)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["id"].startswith("job_")
    assert response.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert job["progress"]["total_s"] == pytest.approx(8.308, abs=0.01)  # from the header
    done = wait_for(live, job["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    assert done["progress"]["fraction"] == 1.0 and done["engine"] == "pocketsphinx"
    assert done["timings"]["running_s"] > 0 and done["attempts"] == 1
    assert job["id"] + ".audio" not in audio_files(jobs_dir)  # the audio goes when done
    for fmt in ("json", "text", "srt", "vtt", "verbose_json"):
        result = httpx.get(
            f"{live.url}/api/v1/jobs/{job['id']}/result",
            params={"format": fmt},
            headers=ALICE,
            timeout=TIMEOUT,
        )
        sync = httpx.post(
            f"{live.url}/v1/audio/transcriptions",
            files={"file": (SHORT, data, "audio/wav")},
            data={"model": "pocketsphinx", "response_format": fmt},
            headers=ALICE,
            timeout=TIMEOUT,
        )
        assert result.status_code == sync.status_code == 200, (fmt, result.text, sync.text)
        assert result.headers["content-type"] == sync.headers["content-type"]
        assert result.headers["x-stt-engine"] == "pocketsphinx"
        if fmt.endswith("json"):
            assert result.json() == sync.json(), fmt
        else:
            assert result.text == sync.text, fmt
    listed = httpx.get(f"{live.url}/api/v1/jobs", headers=ALICE, timeout=TIMEOUT).json()
    assert job["id"] in [j["id"] for j in listed["data"]]


@pytest.mark.timeout(900)  # three steps of 10 s on 2 busy cores
def test_long_recording_progress_then_cancel_queued_and_running(
    live: LiveServer, jobs_dir: Path
) -> None:
    """Ten minutes built from corpus speech: progress grows step by step; a job queued
    behind it and then the running one itself are cancelled, their audio deleted, and
    the runner is free for the next job."""
    long = submit(live, speech_wav(600), "ten-minutes.wav").json()
    queued = submit(live, corpus_file(SHORT).read_bytes(), SHORT).json()
    assert status(live, queued["id"])["status"] == "queued"  # jobs.workers = 1
    cancelled = httpx.delete(
        f"{live.url}/api/v1/jobs/{queued['id']}", headers=ALICE, timeout=TIMEOUT
    ).json()
    assert cancelled["status"] == "cancelled" and cancelled["deleted"] is False
    assert queued["id"] + ".audio" not in audio_files(jobs_dir)
    seen: list[float] = []
    deadline = time.monotonic() + 600
    while len(set(seen)) < 3 and time.monotonic() < deadline:
        job = status(live, long["id"])
        assert job["status"] in ("queued", "running"), job
        if job["progress"]["done_s"] > 0:
            seen.append(job["progress"]["done_s"])
        time.sleep(0.2)
    assert seen == sorted(seen) and len(set(seen)) >= 3, seen
    assert status(live, long["id"])["progress"]["total_s"] == pytest.approx(600, abs=0.1)
    stopped = httpx.delete(
        f"{live.url}/api/v1/jobs/{long['id']}", headers=ALICE, timeout=TIMEOUT
    ).json()
    assert stopped["status"] == "cancelled"
    assert long["id"] + ".audio" not in audio_files(jobs_dir)
    after = submit(live, corpus_file(SHORT).read_bytes(), SHORT).json()
    assert wait_for(live, after["id"], ("succeeded", "failed"))["status"] == "succeeded"
    final = status(live, long["id"])
    assert final["status"] == "cancelled" and final["progress"]["done_s"] < 600
    result = httpx.get(
        f"{live.url}/api/v1/jobs/{long['id']}/result", headers=ALICE, timeout=TIMEOUT
    )
    assert result.status_code == 409 and result.json()["error"]["code"] == "job_not_finished"


def test_another_keys_job_is_404(live: LiveServer) -> None:
    job = submit(live, corpus_file("pocketsphinx__001.wav").read_bytes()).json()
    for method, path in (
        ("GET", f"/api/v1/jobs/{job['id']}"),
        ("GET", f"/api/v1/jobs/{job['id']}/result"),
        ("DELETE", f"/api/v1/jobs/{job['id']}"),
    ):
        response = httpx.request(method, live.url + path, headers=BOB, timeout=TIMEOUT)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "job_not_found"
    theirs = httpx.get(f"{live.url}/api/v1/jobs", headers=BOB, timeout=TIMEOUT).json()
    assert job["id"] not in [j["id"] for j in theirs["data"]]
    assert httpx.get(f"{live.url}/api/v1/jobs/{job['id']}", timeout=TIMEOUT).status_code == 401
    assert wait_for(live, job["id"], ("succeeded", "failed"))["status"] == "succeeded"


def test_webhook_is_signed_and_retried_after_a_500(live: LiveServer) -> None:
    receiver = Receiver([500])
    try:
        job = submit(
            live, corpus_file("pocketsphinx__002.wav").read_bytes(), callback_url=receiver.url
        ).json()
        assert job["callback_url"] == receiver.url
        done = wait_for(live, job["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded"
        deadline = time.monotonic() + 60
        while (status(live, job["id"])["webhook"] or {}).get("state") == "pending":
            assert time.monotonic() < deadline, "the webhook was never delivered"
            time.sleep(0.1)
        assert status(live, job["id"])["webhook"] == {
            "state": "delivered",
            "attempts": 2,
            "error": None,
        }
        assert len(receiver.calls) == 2  # the 500, then the retry
        for headers, body in receiver.calls:
            expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert headers["x-stts-signature"] == f"sha256={expected}"
            event = json.loads(body)
            assert event["type"] == "job.succeeded" and event["job"]["id"] == job["id"]
        forged = hmac.new(b"wrong", receiver.calls[0][1], hashlib.sha256).hexdigest()
        assert receiver.calls[0][0]["x-stts-signature"] != f"sha256={forged}"
    finally:
        receiver.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",  # an address not listed
        "http://example.com/hook",  # a name not listed
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "ftp://127.0.0.1/hook",  # not http(s)
        "http://user:pw@127.0.0.1/hook",  # credentials
    ],
)
def test_a_callback_host_not_allowed_is_refused_at_submission(
    live: LiveServer, jobs_dir: Path, url: str
) -> None:
    before = audio_files(jobs_dir)
    response = submit(live, corpus_file("pocketsphinx__001.wav").read_bytes(), callback_url=url)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "callback_not_allowed" and error["param"] == "callback_url"
    assert audio_files(jobs_dir) == before  # the upload is not left behind


def test_bad_requests_are_clear_errors(live: LiveServer, jobs_dir: Path) -> None:
    before = audio_files(jobs_dir)
    cases = [
        ({"files": {"file": ("x.wav", b"not audio at all", "audio/wav")}}, 415),
        ({"files": {"file": ("x.wav", b"", "audio/wav")}}, 400),
        ({"data": {"model": "pocketsphinx"}}, 400),  # no file
        (
            {
                "files": {"file": ("x.wav", corpus_file(SHORT).read_bytes(), "audio/wav")},
                "data": {"model": "nope"},
            },
            404,
        ),
        (
            {
                "files": {"file": ("x.wav", corpus_file(SHORT).read_bytes(), "audio/wav")},
                "data": {"model": "pocketsphinx", "language": "klingon"},
            },
            400,
        ),
    ]
    for kwargs, expected in cases:
        response = httpx.post(f"{live.url}/api/v1/jobs", headers=ALICE, timeout=TIMEOUT, **kwargs)
        assert response.status_code == expected, (kwargs.get("data"), response.text)
        assert "error" in response.json()
    assert audio_files(jobs_dir) == before
    assert (
        httpx.get(f"{live.url}/api/v1/jobs/job_nope", headers=ALICE, timeout=TIMEOUT).status_code
        == 404
    )
    bad = httpx.get(
        f"{live.url}/api/v1/jobs", params={"status": "weird"}, headers=ALICE, timeout=TIMEOUT
    )
    assert bad.status_code == 400


def test_size_duration_and_quota_limits(settings: Settings, tmp_path: Path) -> None:
    """jobs.max_bytes (not the synchronous limit), jobs.max_duration_s from the header,
    jobs.max_disk_bytes -> 507; the synchronous route keeps its own smaller limit."""
    short = corpus_file(SHORT).read_bytes()  # 265,914 bytes, 8.3 s
    conf = Settings(
        cache_dir=settings.cache_dir,
        engines=["pocketsphinx"],
        default_engine="pocketsphinx",
        audio={"max_bytes": 100_000},
        jobs={
            "dir": tmp_path / "jobs",
            "max_bytes": 600_000,
            "max_duration_s": 15,
            "max_disk_bytes": 700_000,
        },
    )
    with LiveServer(conf) as server:
        sync = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            files={"file": ("a.wav", short, "audio/wav")},
            timeout=TIMEOUT,
        )
        assert sync.status_code == 413  # the synchronous limit is not widened
        headers: dict[str, str] = {}
        big = submit(server, b"\0" * 700_000, headers=headers)
        assert big.status_code == 413 and big.json()["error"]["code"] == "audio_too_large"
        too_long = submit(server, speech_wav(17), headers=headers)  # 544 kB
        assert too_long.status_code == 413
        assert too_long.json()["error"]["code"] == "audio_too_long"
        first = submit(server, short, headers=headers)
        second = submit(server, short, headers=headers)
        assert first.status_code == second.status_code == 202
        full = submit(server, short, headers=headers)  # 3 x 266 kB > 700 kB
        assert full.status_code == 507 and full.json()["error"]["code"] == "insufficient_storage"
        assert len(audio_files(tmp_path / "jobs")) <= 2
        for queued in (first, second):
            httpx.delete(f"{server.url}/api/v1/jobs/{queued.json()['id']}", timeout=TIMEOUT)
        assert audio_files(tmp_path / "jobs") == []  # room again, nothing left behind
        assert submit(server, short, headers=headers).status_code == 202


@pytest.mark.timeout(900)  # two server starts and two runs of the recording, on 2 busy cores
def test_sigkill_mid_job_resumes_from_the_checkpoint(cache_dir: Path, tmp_path: Path) -> None:
    """A real ``stts serve`` killed with SIGKILL mid-job; restarted on the same jobs.dir,
    the job succeeds with the text an uninterrupted run gives, decoding less audio the
    second time (it resumes after its last checkpoint)."""
    recording = speech_wav(40)
    env = {
        "STTS_CACHE_DIR": str(cache_dir),
        "STTS_ENGINES": "pocketsphinx",
        "STTS_DEFAULT_ENGINE": "pocketsphinx",
        "STTS_JOBS__DIR": str(tmp_path / "jobs"),
        "STTS_JOBS__STEP_S": "8",
        "STTS_JSON_LOGS": "false",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = spawn_server(port, env)
    try:
        job = httpx.post(
            f"{url}/api/v1/jobs",
            files={"file": ("talk.wav", recording, "audio/wav")},
            data={"model": "pocketsphinx"},
            timeout=TIMEOUT,
        ).json()
        deadline = time.monotonic() + 600
        while True:
            seen = httpx.get(f"{url}/api/v1/jobs/{job['id']}", timeout=TIMEOUT).json()
            if seen["progress"]["done_s"] >= 8:  # one step checkpointed, four to go
                break
            assert seen["status"] in ("queued", "running") and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    killed_at = seen["progress"]["done_s"]
    assert seen["status"] == "running" and killed_at < 40
    db = sqlite3.connect(tmp_path / "jobs" / "jobs.sqlite3")
    assert db.execute("SELECT status FROM jobs").fetchone()[0] == "running"  # as it died
    db.close()
    proc = spawn_server(port, env)
    try:
        done = wait_server(url, job["id"])
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        assert done["resumed_from_s"] >= killed_at - 0.001
        # Audio decoded on the second attempt: only what came after the checkpoint.
        assert done["decoded_s"] - done["resumed_from_s"] <= 40 - killed_at + 0.01
        resumed = httpx.get(
            f"{url}/api/v1/jobs/{job['id']}/result", params={"format": "text"}, timeout=TIMEOUT
        )
        again = httpx.post(
            f"{url}/api/v1/jobs",
            files={"file": ("talk.wav", recording, "audio/wav")},
            data={"model": "pocketsphinx"},
            timeout=TIMEOUT,
        ).json()
        uninterrupted = wait_server(url, again["id"])
        assert uninterrupted["attempts"] == 1 and uninterrupted["resumed_from_s"] is None
        single = httpx.get(
            f"{url}/api/v1/jobs/{again['id']}/result", params={"format": "text"}, timeout=TIMEOUT
        )
        assert resumed.text == single.text and len(resumed.text.split()) > 30
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert audio_files(tmp_path / "jobs") == []


def wait_server(url: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(f"{url}/api/v1/jobs/{job_id}", timeout=TIMEOUT).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never finished")


def test_a_job_whose_engine_keeps_failing_is_failed_after_max_attempts(tmp_path: Path) -> None:
    """Fault injection (a fake engine that always raises): two attempts, then ``failed``
    with the reason, its audio deleted."""
    register_engine(AlwaysFailsEngine.name, AlwaysFailsEngine)
    conf = Settings(
        cache_dir=tmp_path,
        engines=[AlwaysFailsEngine.name],
        default_engine=AlwaysFailsEngine.name,
        jobs={"dir": tmp_path / "jobs", "max_attempts": 2},
    )
    tone = io.BytesIO()
    with wave.open(tone, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(TONE_SECOND_PCM16)
    try:
        with LiveServer(conf) as server:
            job = submit(server, tone.getvalue(), headers={}, model=AlwaysFailsEngine.name).json()
            done = wait_for(server, job["id"], ("succeeded", "failed"), limit_s=120)
    finally:
        unregister_engine(AlwaysFailsEngine.name)
    assert done["status"] == "failed" and done["attempts"] == 2
    assert done["error"]["code"] == "transcription_failed"
    assert audio_files(tmp_path / "jobs") == []


@pytest.mark.timeout(900)
def test_interactive_requests_wait_behind_at_most_one_job_step(
    settings: Settings, tmp_path: Path
) -> None:
    """Three jobs running on one PocketSphinx worker: a synchronous request's latency stays
    within about one job step of its latency on the idle server (without the gate it
    would queue behind a step of each job). Generous bounds: 2 busy cores."""
    conf = Settings(
        cache_dir=settings.cache_dir,
        engines=["pocketsphinx"],
        default_engine="pocketsphinx",
        jobs={"dir": tmp_path / "jobs", "workers": 3, "step_s": 10},
    )
    data = corpus_file(SHORT).read_bytes()  # 8.3 s

    def sync_latency() -> float:
        started = time.perf_counter()
        response = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            files={"file": (SHORT, data, "audio/wav")},
            data={"model": "pocketsphinx"},
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, response.text
        return time.perf_counter() - started

    with LiveServer(conf) as server:
        sync_latency()  # warm
        idle = sync_latency()
        step = idle * 10 / 8.3  # a 10 s job step costs about this much engine time
        recording = speech_wav(90)
        jobs = [submit(server, recording, headers={}).json()["id"] for _ in range(3)]
        deadline = time.monotonic() + 600
        while not all(status(server, j)["status"] == "running" for j in jobs):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        busy = [sync_latency()]
        progress = [status(server, j)["progress"]["done_s"] for j in jobs]
        for job_id in jobs:
            httpx.delete(f"{server.url}/api/v1/jobs/{job_id}", timeout=TIMEOUT)
    print(f"idle {idle:.2f} s, busy {busy}, step ~{step:.2f} s, job progress {progress}")
    assert sum(progress) > 0  # the jobs did run meanwhile
    assert min(busy) < idle + 2 * step + 2.0
