"""Jobs: the outside probe's findings (issue 15), on one real server on 127.0.0.1.

A job step goes through the engine's speech gate as a synchronous request does; the disk
quota counts only what is on disk; a cursor that is no ASCII number, a multipart boundary
over the parser's limit, a body cut off before its closing boundary and a callback URL
with control characters or port 0 are 400 (never 500, never a shorter file accepted); a
client that goes away mid-upload is no server error; an upload that trickles is cut off
at ``jobs.upload_timeout_s``. No refused upload leaves a file behind.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import select
import socket
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from stts.config import Settings
from tests.conftest import LiveServer

pytestmark = [pytest.mark.slow]

TIMEOUT = httpx.Timeout(120.0)
UPLOAD_TIMEOUT_S = 5.0
MELODY_BYTES = 4 * 16_000 * 2 + 44
QUOTA = 2 * MELODY_BYTES + MELODY_BYTES // 2  # two uploads fit, a third does not


def melody_wav() -> bytes:
    """4 s of a tune with harmonics: no speech for Silero VAD, but PocketSphinx without
    its speech gate writes a word ("of") on it."""
    rng = np.random.default_rng(3)
    t = np.arange(16_000 // 4) / 16_000
    notes = rng.choice([220, 247, 262, 294, 330, 349, 392, 440], 16)
    tune = np.concatenate(
        [sum(np.sin(2 * np.pi * f * k * t) / k for k in range(1, 6)) for f in notes]
    )
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((np.clip(0.2 * tune, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs-probe")


@pytest.fixture(scope="module")
def live(settings: Settings, jobs_dir: Path) -> Iterator[LiveServer]:
    conf = Settings(
        cache_dir=settings.cache_dir,
        engines=["pocketsphinx"],
        default_engine="pocketsphinx",
        jobs={
            "dir": jobs_dir,
            "step_s": 5,
            "max_disk_bytes": QUOTA,
            "upload_timeout_s": UPLOAD_TIMEOUT_S,
            "webhook_hosts": ["127.0.0.2"],
            "webhook_secret": "probe-secret",
        },
    )
    with LiveServer(conf) as server:
        yield server


def audio_files(jobs_dir: Path) -> list[str]:
    return sorted(p.name for p in (jobs_dir / "audio").iterdir())


def submit(server: LiveServer, data: bytes, **fields: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/jobs",
        files={"file": ("a.wav", data, "audio/wav")},
        data={"model": "pocketsphinx", **fields},
        timeout=TIMEOUT,
    )


def finished(server: LiveServer, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 600  # a hang guard, not a speed test
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(
            f"{server.url}/api/v1/jobs/{job_id}", timeout=TIMEOUT
        ).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never finished")


def multipart(boundary: str, data: bytes) -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\npocketsphinx\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


def raw_post(
    server: LiveServer, boundary: str, body: bytes, content_length: int
) -> tuple[int, dict[str, Any]]:
    """POST exactly ``body`` with the Content-Length given (which may be a lie)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        head = (
            "POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def test_a_job_step_goes_through_the_speech_gate_as_a_synchronous_request(
    live: LiveServer, jobs_dir: Path
) -> None:
    wav = melody_wav()
    sync = httpx.post(
        f"{live.url}/v1/audio/transcriptions",
        files={"file": ("a.wav", wav, "audio/wav")},
        data={"model": "pocketsphinx", "response_format": "json"},
        timeout=TIMEOUT,
    )
    assert sync.status_code == 200, sync.text
    response = submit(live, wav)
    assert response.status_code == 202, response.text
    job = finished(live, response.json()["id"])
    assert job["status"] == "succeeded", job
    result = httpx.get(f"{live.url}/api/v1/jobs/{job['id']}/result", timeout=TIMEOUT)
    # One step: exactly the synchronous answer; the gate hears no speech in a tune.
    assert result.json()["text"] == sync.json()["text"] == ""


def test_the_quota_counts_results_not_the_deleted_audio_of_finished_jobs(
    live: LiveServer, jobs_dir: Path
) -> None:
    wav = melody_wav()
    assert len(wav) == MELODY_BYTES
    for _ in range(3):  # three uploads > the quota, one at a time
        response = submit(live, wav)
        assert response.status_code == 202, response.text
        assert finished(live, response.json()["id"])["status"] == "succeeded"
    assert audio_files(jobs_dir) == []


@pytest.mark.parametrize(
    "cursor", ["²", "\u0661\u0662", "9223372036854775808", "99999999999999999999"]
)
def test_a_cursor_that_is_no_ascii_number_the_store_can_hold_is_400(
    live: LiveServer, cursor: str
) -> None:
    response = httpx.get(f"{live.url}/api/v1/jobs", params={"cursor": cursor}, timeout=TIMEOUT)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "cursor"
    largest = httpx.get(
        f"{live.url}/api/v1/jobs", params={"cursor": str(2**63 - 1)}, timeout=TIMEOUT
    )
    assert largest.status_code == 200, largest.text


def test_a_boundary_over_the_parsers_limit_is_400(live: LiveServer, jobs_dir: Path) -> None:
    boundary = "B" * 5000
    body = multipart(boundary, melody_wav()[:2000])
    status, error = raw_post(live, boundary, body, len(body))
    assert status == 400, error
    assert "malformed" in error["error"]["message"]
    assert audio_files(jobs_dir) == []


@pytest.mark.parametrize("cut", ["half the body", "the closing boundary's last --"])
def test_a_body_cut_before_its_closing_boundary_is_400(
    live: LiveServer, jobs_dir: Path, cut: str
) -> None:
    body = multipart("BOUND", melody_wav())
    body = body[: len(body) // 2] if cut == "half the body" else body[: -len("--\r\n")]
    status, error = raw_post(live, "BOUND", body, len(body))
    assert status == 400, error
    assert "incomplete" in error["error"]["message"]
    assert audio_files(jobs_dir) == []


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_gone_mid_upload_is_no_server_error(live: LiveServer, jobs_dir: Path) -> None:
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("stts", "uvicorn.error")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        body = multipart("BOUND", melody_wav())
        with socket.create_connection(("127.0.0.1", live.port), timeout=60) as sock:
            sock.sendall(
                "POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: multipart/form-data; boundary=BOUND\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[: len(body) // 2]
            )
            deadline = time.monotonic() + 60
            while not audio_files(jobs_dir) and time.monotonic() < deadline:
                time.sleep(0.02)  # the upload has begun: its file is there
        deadline = time.monotonic() + 60
        while not any("went away" in r.getMessage() for r in handler.records):
            assert time.monotonic() < deadline, [r.getMessage() for r in handler.records]
            time.sleep(0.05)
        assert audio_files(jobs_dir) == []
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
    errors = [r.getMessage() for r in handler.records if r.levelno >= logging.ERROR]
    assert errors == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2:18799/a\r\nX-Injected: 1",
        "http://127.0.0.2\t:18799/tab",
        "http://127.0.0.2:18799/a\x00",
        "http://127.0.0.2:0/a",
    ],
)
def test_a_callback_url_with_control_characters_or_port_0_is_400(
    live: LiveServer, jobs_dir: Path, url: str
) -> None:
    response = submit(live, melody_wav(), callback_url=url)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "callback_not_allowed"
    assert audio_files(jobs_dir) == []


def test_an_upload_that_trickles_is_cut_at_upload_timeout_s(
    live: LiveServer, jobs_dir: Path
) -> None:
    body = multipart("BOUND", melody_wav())
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", live.port), timeout=60) as sock:
        sock.sendall(
            "POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: multipart/form-data; boundary=BOUND\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:1000]
        )
        sent = 1000
        # One byte every 0.5 s (well under body_timeout_s): only the total bound cuts it.
        while not select.select([sock], [], [], 0.5)[0]:
            assert time.monotonic() - started < 12 * UPLOAD_TIMEOUT_S, "never cut off"
            sock.sendall(body[sent : sent + 1])
            sent += 1
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 408, response.read()
    deadline = time.monotonic() + 60
    while audio_files(jobs_dir) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert audio_files(jobs_dir) == []
