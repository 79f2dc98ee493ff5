"""Durable jobs (issue 15) on one real server on 127.0.0.1 shared by the module, with
PocketSphinx (fast) on real corpus audio: submit -> poll -> result equal to the
synchronous answer, progress on a ten-minute recording, cancel queued and running jobs,
per-key isolation, signed webhooks to a real loopback receiver (retried after a 500), a
callback host not allowed refused at submission, bad requests, and the ``stts jobs``
command against the server. Tests that need a server of their own (limits, SIGKILL and
resume, failing engine, fairness) are in tests/test_jobs_runner.py.

Kept lean for CI (2 busy cores): 5 s job steps (the smallest ``jobs.step_s``) so a few
steps cost little audio, short recordings, and polling instead of sleeps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from stts.cli import app as cli_app
from stts.config import Settings
from stts.testing import free_port
from tests.conftest import LiveServer, corpus_file, requires_corpus
from tests.jobs_support import (
    ALICE,
    ALICE_KEY,
    BOB,
    ONE_STEP,
    POLL_S,
    SECRET,
    SHORT,
    STEP_S,
    TIMEOUT,
    Receiver,
    audio_files,
    speech_wav,
    status,
    submit,
    wait_for,
)

pytestmark = [pytest.mark.slow, requires_corpus]


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def live(settings: Settings, jobs_dir: Path) -> Iterator[LiveServer]:
    """PocketSphinx, two API keys, webhooks allowed to 127.0.0.1 only, 5 s steps, one job
    at a time."""
    conf = Settings(
        cache_dir=settings.cache_dir,
        engines=["pocketsphinx"],
        default_engine="pocketsphinx",
        named_api_keys={"alice": "alice-key-0001", "bob": "bob-key-0002"},
        jobs={
            "dir": jobs_dir,
            "step_s": STEP_S,
            "webhook_hosts": ["127.0.0.1"],
            "webhook_secret": SECRET,
            "webhook_backoff_s": 0.2,
        },
    )
    with LiveServer(conf) as server:
        yield server


def test_submit_poll_result_in_every_format_equals_the_synchronous_answer(
    live: LiveServer, jobs_dir: Path
) -> None:
    data = corpus_file(ONE_STEP).read_bytes()
    response = submit(live, data, ONE_STEP)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["id"].startswith("job_")
    assert response.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert job["progress"]["total_s"] == pytest.approx(3.502, abs=0.01)  # from the header
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
            files={"file": (ONE_STEP, data, "audio/wav")},
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


def test_long_recording_progress_then_cancel_queued_and_running(
    live: LiveServer, jobs_dir: Path
) -> None:
    """Ten minutes built from corpus speech: progress grows step by step; a job queued
    behind it and then the running one itself are cancelled, their audio deleted, and
    the runner is free for the next job."""
    long = submit(live, speech_wav(600), "ten-minutes.wav").json()
    queued = submit(live, corpus_file(ONE_STEP).read_bytes(), ONE_STEP).json()
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
        time.sleep(POLL_S)
    assert seen == sorted(seen) and len(set(seen)) >= 3, seen
    assert status(live, long["id"])["progress"]["total_s"] == pytest.approx(600, abs=0.1)
    stopped = httpx.delete(
        f"{live.url}/api/v1/jobs/{long['id']}", headers=ALICE, timeout=TIMEOUT
    ).json()
    assert stopped["status"] == "cancelled"
    assert long["id"] + ".audio" not in audio_files(jobs_dir)
    after = submit(live, corpus_file("pocketsphinx__001.wav").read_bytes()).json()
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
            time.sleep(POLL_S)
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


def stts_jobs(*args: str) -> Any:
    """``stts jobs ARGS`` in this process (typer's CliRunner), stdout and stderr apart."""
    return CliRunner().invoke(cli_app, ["jobs", *args])


def test_the_jobs_command_against_the_server(live: LiveServer, tmp_path: Path) -> None:
    """``stts jobs submit --wait`` prints what the synchronous API answers; status, list,
    result (to a file) and cancel; one-line errors with exit 1 when the job or the file is
    at fault, 2 when the server cannot be reached or the key is refused."""
    server = ["--url", live.url, "--api-key", ALICE_KEY]
    path = corpus_file(ONE_STEP)
    waited = stts_jobs(
        "submit", str(path), "-m", "pocketsphinx", "--wait", "-f", "srt", "--poll", "0.05", *server
    )
    assert waited.exit_code == 0, waited.output
    job_id = waited.stderr.split()[-1]  # "submitted job_..."
    sync = httpx.post(
        f"{live.url}/v1/audio/transcriptions",
        files={"file": (path.name, path.read_bytes(), "audio/wav")},
        data={"model": "pocketsphinx", "response_format": "srt"},
        headers=ALICE,
        timeout=TIMEOUT,
    )
    assert waited.stdout == sync.text and "-->" in sync.text

    shown = stts_jobs("status", job_id, *server)
    assert shown.exit_code == 0 and shown.stdout.split()[:3] == [job_id, "succeeded", "3.5"]
    listed = stts_jobs("list", "--status", "succeeded", *server)
    assert listed.exit_code == 0 and job_id in listed.stdout
    target = tmp_path / "talk.vtt"
    written = stts_jobs("result", job_id, "-f", "vtt", "-o", str(target), *server)
    assert written.exit_code == 0, written.output
    api = httpx.get(
        f"{live.url}/api/v1/jobs/{job_id}/result", params={"format": "vtt"}, headers=ALICE
    )
    assert target.read_text() == api.text

    submitted = stts_jobs(
        "submit", str(corpus_file("pocketsphinx__001.wav")), "-m", "pocketsphinx", *server
    )
    assert submitted.exit_code == 0 and submitted.stdout.startswith("job_")
    other = submitted.stdout.strip()
    cancelled = stts_jobs("cancel", other, *server)
    # cancelled while queued or running, or deleted when it had already finished
    assert cancelled.exit_code == 0 and cancelled.stdout.split()[0] == other
    assert cancelled.stdout.split()[1] in ("cancelled", "deleted")
    gone = stts_jobs("result", other, *server)
    assert gone.exit_code == 1 and gone.stderr.startswith("error: ")
    assert len(gone.stderr.strip().splitlines()) == 1

    not_audio = tmp_path / "notes.wav"
    not_audio.write_bytes(b"these are not samples")
    refused = stts_jobs("submit", str(not_audio), "-m", "pocketsphinx", *server)
    assert refused.exit_code == 1 and "error: " in refused.stderr
    bobs = stts_jobs("status", job_id, "--url", live.url, "--api-key", "bob-key-0002")
    assert bobs.exit_code == 1 and "no job" in bobs.stderr  # another key's job: 404
    keyless = stts_jobs("status", job_id, "--url", live.url)
    assert keyless.exit_code == 2 and keyless.stderr.startswith("error: ")
    nobody = stts_jobs("list", "--url", f"http://127.0.0.1:{free_port()}")
    assert nobody.exit_code == 2 and "cannot reach the server" in nobody.stderr
    for result in (gone, refused, bobs, keyless, nobody):
        assert "Traceback" not in result.output
