"""PocketSphinx decodes in child processes (issue 15, ``pocketsphinx.isolate``): a real
``stts serve``, the real model, corpus speech joined into a minute.

In the server's process PocketSphinx held the GIL for a whole decode, so the server
stood still meanwhile: /health, other engines, everything. Here /health and a Whisper
request sent while a long PocketSphinx decode is under way are answered before it; a
child killed mid-decode costs that request a JSON 500 and the next one gets a fresh
child; a client that goes away gets its child killed; the children end with the server,
whether it stops gracefully or is killed; and a child's memory stays flat.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from stts.audio import decode_audio
from stts.config import Settings
from stts.engines.base import TranscribeOptions
from stts.service import EngineManager
from stts.testing import free_port, spawn_server
from tests.conftest import corpus_file, requires_corpus
from tests.jobs_support import speech_wav

pytestmark = [pytest.mark.slow, requires_corpus]

TIMEOUT = httpx.Timeout(600.0)
LONG_S = 60  # two of the engine's 30 s windows
SHORT = "pocketsphinx__005.wav"  # 3.5 s
PROBE = "pocketsphinx__001.wav"  # 1.1 s


def _env(cache_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "STTS_CACHE_DIR": str(cache_dir),
        "STTS_ENGINES": "pocketsphinx",
        "STTS_DEFAULT_ENGINE": "pocketsphinx",
        "STTS_JSON_LOGS": "false",
        # Order and isolation are checked here, not speed: no deadline on a loaded machine.
        "STTS_TIMEOUT_BASE_S": "1800",
        "STTS_SHUTDOWN_GRACE_S": "5",
        **extra,
    }


def post(url: str, data: bytes, model: str = "pocketsphinx") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/audio/transcriptions",
        files={"file": ("a.wav", data, "audio/wav")},
        data={"model": model, "language": "en"},
        timeout=TIMEOUT,
    )


def cpu_s(processes: list[psutil.Process]) -> float:
    """CPU seconds used so far by these processes (those still there)."""
    total = 0.0
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def tree(server: psutil.Process) -> list[psutil.Process]:
    return [server, *server.children(recursive=True)]


def engine_children(server: psutil.Process) -> list[psutil.Process]:
    """The engine's worker processes: the children of multiprocessing's fork server."""
    for proc in server.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if "multiprocessing.forkserver" in " ".join(proc.cmdline()):
                return proc.children()
    return []


def wait_decoding(processes: list[psutil.Process], since: float, cpu: float = 1.0) -> None:
    """Wait until these processes have used ``cpu`` seconds more than ``since``: the decode
    of the long recording is under way (uploading and decoding the WAV cost far less)."""
    deadline = time.monotonic() + 300  # a hang guard, not a speed test
    while cpu_s(processes) < since + cpu:
        assert time.monotonic() < deadline, "the decode never started"
        time.sleep(0.05)


class Background:
    """One request on a thread of its own: its response (or exception) when it ends."""

    def __init__(self, url: str, data: bytes, answered: list[str] | None = None) -> None:
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.response = post(url, data)
            except BaseException as exc:
                self.error = exc
            if answered is not None:
                answered.append("pocketsphinx")

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self) -> httpx.Response:
        self.thread.join(TIMEOUT.read)
        assert self.error is None, self.error
        assert self.response is not None
        return self.response


@pytest.fixture(scope="module")
def served(cache_dir: Path) -> Iterator[tuple[str, psutil.Process]]:
    """A real ``stts serve`` with PocketSphinx (isolated, the default) and Whisper, both
    loaded and warm."""
    port = free_port()
    proc = spawn_server(port, _env(cache_dir, STTS_ENGINES="pocketsphinx,whisper"))
    url = f"http://127.0.0.1:{port}"
    try:
        assert post(url, corpus_file(PROBE).read_bytes()).status_code == 200
        assert post(url, corpus_file(PROBE).read_bytes(), "whisper-1").status_code == 200
        yield url, psutil.Process(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


@pytest.mark.timeout(900)  # a minute of PocketSphinx on two loaded cores
def test_health_and_other_engines_answer_while_pocketsphinx_decodes(
    served: tuple[str, psutil.Process],
) -> None:
    """During a minute of speech on PocketSphinx, five /health calls one after another
    and a Whisper request are all answered before PocketSphinx's answer. (In the
    server's process the decode held the GIL: they waited for it.)"""
    url, server = served
    probe = corpus_file(PROBE).read_bytes()
    answered: list[str] = []
    since = cpu_s(tree(server))
    long = Background(url, speech_wav(LONG_S), answered)
    wait_decoding(tree(server), since)
    for _ in range(5):
        assert httpx.get(f"{url}/health", timeout=TIMEOUT).status_code == 200
        answered.append("health")
    other = post(url, probe, "whisper-1")
    assert other.status_code == 200 and other.json()["text"].strip()
    answered.append("whisper")
    response = long.result()
    assert response.status_code == 200, response.text
    assert len(response.json()["text"].split()) > 60
    assert answered == ["health"] * 5 + ["whisper", "pocketsphinx"]


def test_a_child_killed_mid_decode_fails_that_request_only(
    served: tuple[str, psutil.Process],
) -> None:
    """Fault injection: the worker process is killed (SIGKILL) mid-decode. That request
    gets the engine's JSON 500 ``transcription_failed``; the next one is answered by a
    fresh child, with the same words as before."""
    url, server = served
    short = corpus_file(SHORT).read_bytes()
    before = post(url, short)
    assert before.status_code == 200
    (child,) = engine_children(server)
    long = Background(url, speech_wav(LONG_S))
    wait_decoding([child], cpu_s([child]))
    child.kill()
    failed = long.result()
    assert failed.status_code == 500, failed.text
    assert failed.json()["error"]["code"] == "transcription_failed"
    after = post(url, short)
    assert after.status_code == 200, after.text
    assert after.json()["text"] == before.json()["text"]
    (fresh,) = engine_children(server)
    assert fresh.pid != child.pid


def test_a_client_gone_mid_decode_gets_its_child_killed(
    served: tuple[str, psutil.Process],
) -> None:
    """A client that closes its connection mid-decode: the child is killed at once (not
    left decoding a minute for nobody) and the next request gets a fresh one."""
    url, server = served
    port = int(url.rsplit(":", 1)[1])
    (child,) = engine_children(server)
    since = cpu_s([child])
    boundary = "isolation-test"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\npocketsphinx\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + speech_wav(LONG_S)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(head + body)
        wait_decoding([child], since)
    child.wait(120)  # killed, not left to finish (a hang guard, not a speed test)
    again = post(url, corpus_file(PROBE).read_bytes())
    assert again.status_code == 200, again.text
    assert [p.pid for p in engine_children(server)] != [child.pid]


def test_a_child_s_memory_stays_flat(served: tuple[str, psutil.Process]) -> None:
    """Eight requests on one child: its RSS grows by less than 8 MiB after the first
    two (the decoder is reused; samples and results are freed)."""
    url, server = served
    short = corpus_file(PROBE).read_bytes()
    for _ in range(2):
        assert post(url, short).status_code == 200
    (child,) = engine_children(server)
    before = child.memory_info().rss
    for _ in range(8):
        assert post(url, short).status_code == 200
    grown = child.memory_info().rss - before
    (same,) = engine_children(server)
    print(f"child RSS {before / 2**20:.1f} MiB, +{grown / 2**20:.2f} MiB after 8 requests")
    assert same.pid == child.pid and grown < 8 * 2**20


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_no_worker_process_outlives_the_server(cache_dir: Path, how: str) -> None:
    """Two PocketSphinx workers, one of them mid-decode: after a graceful stop (grace
    2 s) or a SIGKILL of the server, none of its processes (children, fork server,
    resource tracker) is left."""
    port = free_port()
    proc = spawn_server(
        port, _env(cache_dir, STTS_POCKETSPHINX__WORKERS="2", STTS_SHUTDOWN_GRACE_S="2")
    )
    url = f"http://127.0.0.1:{port}"
    server = psutil.Process(proc.pid)
    try:
        workers = engine_children(server)
        assert len(workers) == 2
        descendants = server.children(recursive=True)
        long = Background(url, speech_wav(LONG_S))
        wait_decoding(workers, cpu_s(workers))
        proc.send_signal(getattr(signal, how))
        proc.wait(120)
        if how == "SIGTERM":
            stopped = long.result()
            assert stopped.status_code == 503, stopped.text
            assert stopped.json()["error"]["code"] == "shutting_down"
        _, alive = psutil.wait_procs(descendants, timeout=60)
        assert alive == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_isolated_and_in_process_decodes_are_the_same(settings: Settings) -> None:
    """The child runs the same engine code: the same transcript, words and times."""
    audio = decode_audio(corpus_file(SHORT))
    options = TranscribeOptions(language="en")
    answers = []
    for isolate in (True, False):
        section = settings.pocketsphinx.model_copy(update={"isolate": isolate})
        conf = settings.model_copy(update={"pocketsphinx": section})
        with EngineManager(conf).session() as manager:
            answers.append(manager.transcribe(audio, engine="pocketsphinx", options=options))
            slot = manager.slot(manager.resolve("pocketsphinx"))
            assert (slot._all_instances[0]._process is not None) is isolate  # type: ignore[attr-defined]
    assert answers[0] == answers[1] and answers[0].words


def test_isolation_is_on_in_a_server_and_off_in_the_library(settings: Settings) -> None:
    """Unset, ``pocketsphinx.isolate`` is on in what stts.server.build_app builds (stts
    serve, Ray Serve replicas) and off for the library and one-shot commands, which have
    nothing else waiting on the GIL and may run from a script without a __main__ guard;
    an operator's explicit value is kept."""
    from stts.server import build_app

    assert settings.pocketsphinx.isolate is None
    with EngineManager(settings).session() as manager:
        manager.transcribe(decode_audio(corpus_file(SHORT)), engine="pocketsphinx")
        slot = manager.slot(manager.resolve("pocketsphinx"))
        assert slot._all_instances[0]._process is None  # type: ignore[attr-defined]
    for chosen, expected in ((None, True), (False, False), (True, True)):
        section = settings.pocketsphinx.model_copy(update={"isolate": chosen})
        app = build_app(settings.model_copy(update={"pocketsphinx": section}))
        try:
            assert app.state.manager.settings.pocketsphinx.isolate is expected
        finally:
            app.state.manager.close()
