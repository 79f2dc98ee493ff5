"""Helpers of the jobs tests (tests/test_jobs.py, tests/test_jobs_runner.py): speech
recordings built from the corpus, a webhook receiver, and the job calls they make."""

from __future__ import annotations

import functools
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from stts.audio import decode_audio
from stts.testing import joined_speech_wav
from tests.conftest import CORPUS_ITEMS, LiveServer

SECRET = "webhook-secret-for-tests"
ALICE = {"Authorization": "Bearer alice-key-0001"}
BOB = {"Authorization": "Bearer bob-key-0002"}
ALICE_KEY = "alice-key-0001"
ONE_STEP = "pocketsphinx__005.wav"  # 3.5 s: one job step (step_s = 5)
SHORT = "vosk-api__test.wav"  # 8.3 s, 266 kB
STEP_S = 5  # the smallest jobs.step_s: several steps cost little audio
TIMEOUT = httpx.Timeout(120.0)
POLL_S = 0.05


@functools.cache
def _speech_clips() -> tuple[np.ndarray, ...]:
    return tuple(
        decode_audio(item.path).samples
        for item in CORPUS_ITEMS
        if item.sample_rate == 16_000 and item.path.suffix == ".wav" and item.channels == 1
    )


@functools.cache
def speech_wav(seconds: float) -> bytes:
    """A 16 kHz mono WAV of ``seconds``, built from the corpus's 16 kHz speech files with
    0.4 s pauses between them (repeated as needed)."""
    return joined_speech_wav(_speech_clips(), seconds)


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
        time.sleep(POLL_S)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def audio_files(jobs_dir: Path) -> list[str]:
    return sorted(p.name for p in (jobs_dir / "audio").iterdir())


def wait_server(url: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(f"{url}/api/v1/jobs/{job_id}", timeout=TIMEOUT).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(POLL_S)
    raise AssertionError(f"job {job_id} never finished")
