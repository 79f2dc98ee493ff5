"""Security and operations on a real server: API keys, rate limits, metrics, request ids,
SIGTERM drain (real process), no temp files or descriptors left behind."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import openai
import pytest

from stts.config import Settings
from stts.engines.registry import register_engine, unregister_engine
from stts.logs import JsonFormatter, request_id_var
from stts.testing import free_port, spawn_server
from tests.conftest import LiveServer, corpus_file, requires_corpus
from tests.fault_engines import LoadFailsEngine, SlowEngine

pytestmark = [requires_corpus]


def _audio() -> dict[str, tuple[str, bytes]]:
    return {"speech": ("a.wav", corpus_file("pocketsphinx__001.wav").read_bytes())}


@pytest.fixture(scope="module")
def keyed_server(
    tmp_path_factory: pytest.TempPathFactory, settings: Settings
) -> Iterator[LiveServer]:
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    digest = hashlib.sha256(b"from-the-file").hexdigest()
    key_file.write_text(f"# name sha256\nbob {digest}\n")
    conf = Settings(
        cache_dir=settings.cache_dir,
        engines=["pocketsphinx"],
        default_engine="pocketsphinx",
        api_keys=["plain-key"],
        named_api_keys={"alice": "secret-alice"},
        api_keys_file=key_file,
        # Slow refills, so that four requests in a row find an empty bucket on any machine:
        # 12/min (one token per 5 s) for most keys, 2/min for alice, 6000/min for bob.
        rate_limit={"requests_per_minute": 12, "burst": 3, "per_key": {"bob": 6000, "alice": 2}},
    )
    with LiveServer(conf) as live:
        yield live


@pytest.mark.slow
def test_keys_are_required_except_on_health_and_ready(keyed_server: LiveServer) -> None:
    url = keyed_server.url
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/ready").status_code == 200
    for path in ("/v1/models", "/api/v1/engines", "/metrics"):
        r = httpx.get(f"{url}{path}")
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
    assert (
        httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    )
    assert (
        httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer plain-key"}).status_code
        == 200
    )
    assert httpx.get(f"{url}/v1/models", headers={"X-API-Key": "secret-alice"}).status_code == 200
    assert httpx.get(f"{url}/v1/models", headers={"X-API-Key": "from-the-file"}).status_code == 200
    # The name is not the key.
    assert httpx.get(f"{url}/v1/models", headers={"X-API-Key": "alice"}).status_code == 401


@pytest.mark.slow
def test_openai_client_sends_its_key_as_bearer(keyed_server: LiveServer) -> None:
    with (
        openai.OpenAI(
            base_url=f"{keyed_server.url}/v1", api_key="from-the-file", max_retries=0
        ) as c,
        corpus_file("pocketsphinx__001.wav").open("rb") as fh,
    ):
        assert c.audio.transcriptions.create(model="pocketsphinx", file=fh).text == "ten of clubs"
    with openai.OpenAI(base_url=f"{keyed_server.url}/v1", api_key="nope", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            c.models.list()


def _until_refused(url: str, headers: dict[str, str], most: int) -> tuple[int, httpx.Response]:
    """Empty uploads (400, cheap) until one is refused with 429; how many passed."""
    for passed in range(most):
        r = httpx.post(url, files={"speech": ("e.wav", b"")}, headers=headers)
        if r.status_code == 429:
            return passed, r
        assert r.status_code == 400, r.text
    raise AssertionError(f"{most} requests in a row were never rate limited")


@pytest.mark.slow
def test_rate_limit_429_then_recovery_after_refill(keyed_server: LiveServer) -> None:
    url = f"{keyed_server.url}/api/v1/stt"
    alice = {"Authorization": "Bearer secret-alice"}
    plain = {"Authorization": "Bearer plain-key"}
    # Each key has its own bucket of 3: alice emptying hers leaves plain-key's full.
    passed, refused = _until_refused(url, alice, 10)
    assert passed == 3 and refused.json()["error"]["code"] == "rate_limited"
    r = httpx.post(url, files=_audio(), headers=alice)
    assert r.status_code == 429
    passed, plain_refused = _until_refused(url, plain, 10)
    assert passed == 3
    # ... and its own rate: alice's 2/min refills a token in 30 s, the default 12/min in 5.
    assert 15 < int(refused.headers["Retry-After"]) <= 30
    wait = int(plain_refused.headers["Retry-After"])
    assert 1 <= wait <= 5
    # bob's 6000/min refills the bucket within 0.1 s (the default rate would take 15 s):
    # three bursts of three, 0.1 s apart, all pass.
    bob = {"X-API-Key": "from-the-file"}
    for _ in range(3):
        for _ in range(3):
            assert httpx.post(url, files={"speech": ("e.wav", b"")}, headers=bob).status_code == 400
        time.sleep(0.1)
    time.sleep(wait + 0.1)
    r = httpx.post(url, files=_audio(), headers=plain)
    assert r.status_code == 200 and r.json()["text"] == "ten of clubs"
    assert httpx.post(url, files=_audio(), headers=alice).status_code == 429  # still empty


@pytest.mark.slow
def test_forwarded_for_is_trusted_only_from_configured_proxies(settings: Settings) -> None:
    def run(trusted: list[str]) -> list[int]:
        conf = Settings(
            cache_dir=settings.cache_dir,
            engines=["pocketsphinx"],
            default_engine="pocketsphinx",
            trusted_proxies=trusted,
            rate_limit={"requests_per_minute": 1, "burst": 1},
        )
        with LiveServer(conf) as live:
            return [
                httpx.post(
                    f"{live.url}/api/v1/stt",
                    files={"speech": ("e.wav", b"")},
                    headers={"X-Forwarded-For": f"203.0.113.{i}"},
                ).status_code
                for i in range(3)
            ]

    # Behind a trusted proxy, each forwarded client has its own bucket.
    assert run(["127.0.0.1/32"]) == [400, 400, 400]
    # From an untrusted peer the header is ignored: one bucket for the peer address.
    assert run([]) == [400, 429, 429]


class NotReadyServer(LiveServer):
    """A LiveServer that does not wait for /ready: only until HTTP answers."""

    def __enter__(self) -> NotReadyServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/health", timeout=2)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("server never answered /health")


class GatedLoadEngine(SlowEngine):
    """FAULT INJECTION: its model load waits until the test opens ``gate``."""

    name = "fault-gated-load"
    delay: ClassVar[float] = 0.0
    gate: ClassVar[threading.Event] = threading.Event()
    loads: ClassVar[int] = 0

    def load(self) -> None:
        type(self).loads += 1
        if not self.gate.wait(60):
            raise RuntimeError("the test never opened the gate")


def _poll(what: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "the state was never reached"
        time.sleep(0.05)


@pytest.mark.slow
def test_ready_is_503_before_the_first_load_and_stays_200_after_an_idle_unload(
    settings: Settings,
) -> None:
    """The issue's reproduction: PocketSphinx, idle_unload_s, lazy loading; over HTTP."""
    conf = Settings(
        cache_dir=settings.cache_dir,
        engines=["pocketsphinx"],
        default_engine="pocketsphinx",
        preload=False,
        pocketsphinx={"idle_unload_s": 1},
    )
    with NotReadyServer(conf) as live:
        before = httpx.get(f"{live.url}/ready")
        assert before.status_code == 503 and before.json()["status"] == "unloaded", before.text
        assert httpx.head(f"{live.url}/ready").status_code == 503
        r = httpx.post(f"{live.url}/api/v1/stt", files=_audio(), timeout=60)
        assert r.status_code == 200 and r.json()["text"] == "ten of clubs"

        def unloads() -> int:
            report = httpx.get(f"{live.url}/api/v1/engines").json()["details"]["pocketsphinx"]
            return int(report["idle_unloads"])

        _poll(lambda: unloads() >= 1)
        after = httpx.get(f"{live.url}/ready")
        assert after.status_code == 200, after.text
        assert after.json() == {"status": "ready", "engine": "pocketsphinx", "model": "unloaded"}
        assert httpx.head(f"{live.url}/ready").status_code == 200
        r = httpx.post(f"{live.url}/api/v1/stt", files=_audio(), timeout=60)
        assert r.status_code == 200 and r.json()["text"] == "ten of clubs"  # loaded again


def test_ready_is_503_while_the_model_first_loads_and_when_it_failed(settings: Settings) -> None:
    register_engine(GatedLoadEngine.name, GatedLoadEngine)
    register_engine(LoadFailsEngine.name, LoadFailsEngine)
    GatedLoadEngine.gate.clear()
    GatedLoadEngine.loads = 0
    try:
        conf = Settings(
            cache_dir=settings.cache_dir,
            engines=[GatedLoadEngine.name],
            default_engine=GatedLoadEngine.name,
            plugins={GatedLoadEngine.name: {"idle_unload_s": 0.5}},
        )
        with NotReadyServer(conf) as live:
            _poll(lambda: GatedLoadEngine.loads == 1)  # preloading, held at the gate
            loading = httpx.get(f"{live.url}/ready")
            assert loading.status_code == 503 and loading.json()["status"] == "loading"
            GatedLoadEngine.gate.set()
            _poll(lambda: httpx.get(f"{live.url}/ready").status_code == 200)
            # Freed for being idle, then loading again behind the gate: still ready.
            engines = f"{live.url}/api/v1/engines"
            _poll(
                lambda: (
                    httpx.get(engines).json()["details"][GatedLoadEngine.name]["idle_unloads"] >= 1
                )
            )
            GatedLoadEngine.gate.clear()
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                answer = pool.submit(
                    httpx.post, f"{live.url}/api/v1/stt", files=_audio(), timeout=60
                )
                _poll(lambda: GatedLoadEngine.loads == 2)
                reloading = httpx.get(f"{live.url}/ready")
                assert reloading.status_code == 200, reloading.text
                assert reloading.json()["model"] == "loading"
                GatedLoadEngine.gate.set()
                assert answer.result(60).json()["text"] == "slow result"
        failing = Settings(
            cache_dir=settings.cache_dir,
            engines=[LoadFailsEngine.name],
            default_engine=LoadFailsEngine.name,
        )
        with NotReadyServer(failing) as live:
            _poll(lambda: httpx.get(f"{live.url}/ready").json()["status"] != "unloaded")
            failed = httpx.get(f"{live.url}/ready")
            assert failed.status_code == 503 and failed.json()["status"] == "failed"
            assert failed.json()["error"]
    finally:
        GatedLoadEngine.gate.set()
        unregister_engine(GatedLoadEngine.name)
        unregister_engine(LoadFailsEngine.name)


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
def test_metrics_change_as_requests_are_served(server: LiveServer) -> None:
    before = httpx.get(f"{server.url}/metrics").text
    assert "process_resident_memory_bytes" in before
    r = httpx.post(f"{server.url}/api/v2/stt/pocketsphinx", files=_audio(), timeout=60)
    assert r.status_code == 200
    httpx.post(f"{server.url}/api/v1/stt", files={"speech": ("x.wav", b"junk" * 100)})
    after = httpx.get(f"{server.url}/metrics").text
    labels = {"route": "/api/v2/stt/{engine}", "status": "200", "engine": "pocketsphinx"}
    assert (
        _metric(after, "stts_http_requests_total", **labels)
        == _metric(before, "stts_http_requests_total", **labels) + 1
    )
    assert _metric(after, "stts_http_requests_total", route="/api/v1/stt", status="415") >= 1
    audio_before = _metric(before, "stts_audio_seconds_total", engine="pocketsphinx")
    assert _metric(after, "stts_audio_seconds_total", engine="pocketsphinx") == pytest.approx(
        audio_before + 1.095, abs=0.01
    )
    assert _metric(after, "stts_real_time_factor_count", engine="pocketsphinx") >= 1
    assert _metric(after, "stts_engine_loaded", engine="pocketsphinx") == 1
    assert "stts_engine_queue_depth" in after and "stts_engine_rejections_total" in after
    assert _metric(after, "stts_model_load_seconds", engine="whisper") > 0


@pytest.mark.slow
def test_request_id_is_echoed_or_generated(server: LiveServer) -> None:
    r = httpx.get(f"{server.url}/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = httpx.get(f"{server.url}/health").headers["x-request-id"]
    assert len(generated) == 32
    # Unsafe ids (log injection) are replaced.
    assert (
        httpx.get(f"{server.url}/health", headers={"X-Request-ID": "a\tb"}).headers["x-request-id"]
        != "a\tb"
    )


def test_json_log_lines_carry_the_request_id() -> None:
    record = logging.makeLogRecord(
        {
            "name": "stts.access",
            "msg": "GET %s",
            "args": ("/x",),
            "levelno": 20,
            "levelname": "INFO",
            "status": 200,
        }
    )
    token = request_id_var.set("rid-1")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "rid-1" and line["msg"] == "GET /x" and line["status"] == 200


@pytest.mark.slow
def test_no_temp_files_or_descriptors_left_behind(cache_dir: Path, tmp_path: Path) -> None:
    """A server process of its own, with a temp dir of its own: what it leaves there and
    the descriptors it holds are its own, whatever else runs on the machine."""
    own_tmp = tmp_path / "server-tmp"
    own_tmp.mkdir()
    port = free_port()
    env = {
        "TMPDIR": str(own_tmp),
        "STTS_CACHE_DIR": str(cache_dir),
        "STTS_ENGINES": "pocketsphinx",
        "STTS_DEFAULT_ENGINE": "pocketsphinx",
        "STTS_TIMEOUT_BASE_S": "600",  # about files, not deadlines: a loaded machine is slow
    }
    proc = spawn_server(port, env)
    fd_dir = Path(f"/proc/{proc.pid}/fd")
    big = corpus_file("openai-whisper__jfk.flac").read_bytes()  # > 1 MiB: spooled to disk
    payloads = [big, b"", os.urandom(3_000_000), big[: len(big) // 2]]

    def send(data: bytes) -> int:
        return httpx.post(
            f"http://127.0.0.1:{port}/api/v1/stt", files={"speech": ("a.flac", data)}, timeout=300
        ).status_code

    def spooled() -> list[str]:
        """The server's open files in its temp dir (unnamed O_TMPFILE ones included)."""
        targets = []
        for fd in fd_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):  # closed meanwhile
                targets.append(os.readlink(fd))
        return [t for t in targets if t.startswith(str(own_tmp))]

    try:
        send(payloads[1])
        # An upload held half-sent: its spooled part is open in the server's own temp
        # dir, so that is the directory whose emptiness the end of the test checks.
        half_sent = threading.Event()
        checked = threading.Event()

        def body() -> Iterator[bytes]:
            yield b'--B\r\nContent-Disposition: form-data; name="speech"; filename="a.flac"\r\n\r\n'
            yield big[:1_500_000]
            half_sent.set()
            checked.wait(60)
            yield big[1_500_000:] + b"\r\n--B--\r\n"

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(
                httpx.post,
                f"http://127.0.0.1:{port}/api/v1/stt",
                content=body(),
                headers={"Content-Type": "multipart/form-data; boundary=B"},
                timeout=60,
            )
            half_sent.wait(60)
            try:
                _poll(lambda: bool(spooled()))
            finally:
                checked.set()
            assert held.result(60).status_code == 200
        # Compared with what is there after one request, not with nothing: onnxruntime
        # writes one session-id file (.ses) into the temp dir when first used.
        before_files = set(own_tmp.iterdir())
        before_fds = len(list(fd_dir.iterdir()))
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(send, payloads))
        assert sorted(set(codes)) == [200, 400, 415]
        # Every spooled upload is gone once its answer was sent: no file, no open one.
        assert set(own_tmp.iterdir()) == before_files and spooled() == []
        # Keep-alive connections may stay open a while: at most one per client thread.
        assert len(list(fd_dir.iterdir())) <= before_fds + 4
    finally:
        proc.terminate()
        proc.wait(60)


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_then_exits_zero(cache_dir: Path) -> None:
    port = free_port()
    proc = spawn_server(
        port,
        {"STTS_CACHE_DIR": str(cache_dir), "STTS_SHUTDOWN_GRACE_S": "30"},
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        results: list[httpx.Response] = []
        data = corpus_file("ort-extensions__1272-141231-0002.mp3").read_bytes()  # 13 s of speech
        worker = threading.Thread(
            target=lambda: results.append(
                httpx.post(
                    f"{url}/v1/audio/transcriptions",
                    files={"file": ("a.mp3", data)},
                    data={"model": "whisper-1", "language": "en"},
                    timeout=120,
                )
            )
        )
        worker.start()
        engines = f"{url}/api/v1/engines"
        _poll(lambda: httpx.get(engines).json()["details"]["whisper"]["in_flight"] > 0)
        proc.send_signal(signal.SIGTERM)

        def late() -> int | str:
            try:
                return httpx.get(f"{url}/v1/models", timeout=5).status_code
            except httpx.TransportError:
                return "refused"

        _poll(lambda: late() != 200)  # the signal has been handled
        assert late() in (503, "refused")
        worker.join(120)
        assert results and results[0].status_code == 200
        assert "spectators" in results[0].json()["text"].lower()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert lines and all("level" in entry for entry in lines)
    assert not any("Traceback" in line for line in stderr.splitlines())
    # the drained request's access line: its id, status, engine and where its time went
    (access,) = [
        e for e in lines if e["logger"] == "stts.access" and e["path"] == "/v1/audio/transcriptions"
    ]
    assert access["status"] == 200 and access["engine"] == "whisper"
    assert len(access["request_id"]) == 32
    assert set(access["timings_ms"]) == {"decode", "queue", "engine"}
    assert access["timings_ms"]["engine"] > access["timings_ms"]["decode"] > 0


def test_malloc_arenas_are_capped_on_glibc_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stts.memory import limit_malloc_arenas

    assert limit_malloc_arenas(0) is False  # 0: leave glibc's default
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas(2) is False  # the operator's environment wins
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    import platform
    import sys

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert limit_malloc_arenas(2) is expected
    assert Settings().malloc_arena_max == 2
