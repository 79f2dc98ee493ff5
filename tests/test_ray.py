"""`stts batch --ray` and `stts serve --ray` on a real local Ray cluster.

Ray binds the machine's non-loopback address whatever it is told, and this machine (and
CI) may only send traffic to loopback. So the tests run inside a private network
namespace that has nothing but loopback: the one test collected in a normal run
re-executes this module under ``unshare --net --pid --fork --mount-proc`` (root, as CI
runs), where the cluster (``ray start --head``), the CLI processes and the test all
live. The private PID namespace also ends every Ray process when the inner run ends,
and makes ``ray stop`` touch nothing outside it. Without ``unshare`` rights the test is
skipped with the reason.

Engine: PocketSphinx (fast and deterministic), actors of half a CPU each (two actors of a
whole CPU starve Ray Data's read tasks on a 2-CPU cluster).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stts.testing import free_port, wait_ready
from tests.conftest import corpus_file, requires_corpus

INNER = os.environ.get("STTS_RAY_NETNS") == "1"
HAVE_RAY = importlib.util.find_spec("ray") is not None

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    requires_corpus,
    pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (the ray extra)"),
]

inner_only = pytest.mark.skipif(not INNER, reason="runs inside the private network namespace")

ENGINE = ["--engine", "pocketsphinx"]
FILES = [
    "pocketsphinx__001.wav",
    "pocketsphinx__002.wav",
    "pocketsphinx__003.wav",
    "pocketsphinx__004.wav",
    "pocketsphinx__005.wav",
    "pocketsphinx__goforward.raw",
    "deepspeech__LDC93S1.wav",
    "coqui-tts__LJ001-0002.mp3",
]


def _unshare_reason() -> str | None:
    """Why the namespace can't be made here, or None."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) is missing"
    probe = subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"unshare --net is not permitted here: {probe.stderr.strip()[:200]}"
    return None


@pytest.mark.skipif(INNER, reason="this is the outer run's wrapper")
@pytest.mark.timeout(1500)
def test_ray_in_a_private_network_namespace() -> None:
    reason = _unshare_reason()
    if reason is not None:
        pytest.skip(reason)
    # Fixed arguments only: this file and this interpreter.
    script = 'ip link set lo up && exec "$0" -m pytest "$1" -q -x -p no:cacheprovider -o addopts=""'
    proc = subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c", script]
        + [sys.executable, __file__],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "STTS_RAY_NETNS": "1"},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-8000:]
    assert "3 passed" in output, output[-3000:]  # the inner run skips only this wrapper


# -- inside the namespace ------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    address: str
    dashboard: str


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """``ray start --head`` on loopback, 2 CPUs; stopped (and its files removed) after."""
    port, dashboard_port = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="stts-ray-")  # short: Ray's socket paths must fit
    ray_cli = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    # The dashboard process serves Ray's state API (actor PIDs); its UI is not used.
    start = [
        ray_cli,
        "start",
        "--head",
        "--num-cpus=2",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=300)
    os.environ.update({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"})
    try:
        yield Cluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}")
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_stts(*args: str, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STTS_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "stts.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def results(out: Path) -> list[dict[str, object]]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def alive_actors(cluster: Cluster, prefix: str) -> list[int]:
    """PIDs of live actors whose class name starts with ``prefix`` (Ray's state API)."""
    from ray.util.state import list_actors

    actors = list_actors(address=cluster.dashboard, filters=[("state", "=", "ALIVE")])
    return [a.pid for a in actors if a.class_name.startswith(prefix)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The corpus files plus one that is not audio."""
    bad = tmp_path_factory.mktemp("bad") / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio" * 10)
    return [*(corpus_file(name) for name in FILES), bad]


@inner_only
def test_ray_batch_matches_local_and_resumes(
    cluster: Cluster, inputs: list[Path], tmp_path: Path, cache_dir: Path
) -> None:
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    args = [*map(str, inputs), *ENGINE, "--language", "en", "--format", "txt,srt"]
    first = run_stts("batch", *args, "-o", str(local), cache_dir=cache_dir)
    assert first.returncode == 1, first.stderr  # one bad file
    ray_args = ["--ray", cluster.address, "--actors", "2", "--cpus-per-actor", "0.5"]
    proc = run_stts("batch", *args, "-o", str(on_ray), *ray_args, cache_dir=cache_dir)
    assert proc.returncode == 1, proc.stderr

    local_rows = {r["path"]: r for r in results(local)}
    ray_rows = results(on_ray)
    assert sorted(r["path"] for r in ray_rows) == sorted(map(str, inputs))  # each once
    for row in ray_rows:
        assert row["text"] == local_rows[row["path"]]["text"], row["path"]
        assert row["engine"] == local_rows[row["path"]]["engine"]
    bad = next(r for r in ray_rows if str(r["path"]).endswith("broken.wav"))
    assert bad["error"] and bad["text"] is None
    good = [r for r in ray_rows if not r["error"]]
    assert len(good) == len(FILES) and all(r["text"] for r in good)
    assert all((on_ray / f"{Path(str(r['path'])).stem}.srt").is_file() for r in good)

    again = run_stts("batch", *args, "-o", str(on_ray), *ray_args, cache_dir=cache_dir)
    assert f"0 done, {len(inputs)} skipped" in again.stderr, again.stderr
    assert results(on_ray) == ray_rows


@inner_only
def test_a_killed_actor_is_replaced_and_every_file_is_done_once(
    cluster: Cluster, tmp_path: Path, cache_dir: Path
) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    for copy in range(2):
        for name in FILES:
            source = corpus_file(name)
            shutil.copy(source, folder / f"{copy}-{source.name}")
    total = 2 * len(FILES)
    out = tmp_path / "out"
    env = {**os.environ, "STTS_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "stts.cli", "batch", str(folder), "-o", str(out), *ENGINE]
    command += ["--ray", cluster.address, "--actors", "2", "--cpus-per-actor", "0.5"]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        log = out / "results.jsonl"
        while not (log.exists() and log.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "no result came"
            time.sleep(0.2)
        victims = alive_actors(cluster, "MapWorker")
        assert victims, "no Ray Data actor found"
        done_before = len(log.read_text().splitlines())
        os.kill(victims[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert done_before < total  # the kill happened mid-run
    rows = results(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in folder.iterdir())
    assert all(r["text"] and not r["error"] for r in rows)


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def realtime_transcript(port: int, path: Path) -> str:
    """One manually committed item over /v1/realtime (a WebSocket through Serve's proxy)."""
    import base64

    import numpy as np
    import soxr
    from websockets.sync.client import connect

    from stts.audio import decode_audio

    samples = soxr.resample(decode_audio(path).samples, 16000, 24000)
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    url = f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription"
    with connect(url, open_timeout=60) as ws:

        def until(kind: str) -> dict[str, Any]:
            while True:
                event: dict[str, Any] = json.loads(ws.recv(timeout=120))
                assert event["type"] != "error", event
                if event["type"] == kind:
                    return event

        ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"turn_detection": None}},
                    },
                }
            )
        )
        until("session.updated")
        for i in range(0, len(pcm), 9600):
            chunk = base64.b64encode(pcm[i : i + 9600]).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        return str(until("conversation.item.input_audio_transcription.completed")["transcript"])


@inner_only
def test_serve_on_ray_two_replicas_and_a_killed_one_comes_back(
    cluster: Cluster, cache_dir: Path
) -> None:
    from openai import OpenAI

    port = free_port()
    env = {**os.environ, "STTS_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "stts.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--engines", "pocketsphinx", "--default-engine"]
    command += ["pocketsphinx", "--ray", cluster.address, "--replicas", "2"]
    command += ["--cpus-per-replica", "0.5"]
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    audio = corpus_file("pocketsphinx__005.wav")

    def transcribe() -> tuple[str, str]:
        with audio.open("rb") as fh:
            raw = client.audio.transcriptions.with_raw_response.create(
                model="pocketsphinx", file=fh
            )
        return raw.parse().text, raw.headers["x-stts-replica"]

    try:
        wait_ready(url, timeout=300)
        answers = [transcribe() for _ in range(10)]
        assert {text for text, _ in answers} == {"eight of spades four of clubs seven of hearts"}
        replicas = {replica for _, replica in answers}
        assert len(replicas) == 2, answers
        spoken = realtime_transcript(port, corpus_file("pocketsphinx__001.wav"))
        assert "clubs" in spoken.lower(), spoken

        # Each replica's /metrics counts its own transcriptions; together, all ten.
        counted: dict[str, float] = {}
        for _ in range(60):
            scrape = httpx.get(f"{url}/metrics", timeout=30)
            counted[scrape.headers["x-stts-replica"]] = _metric(
                scrape.text, "stts_transcriptions_total"
            )
            if counted.keys() == replicas:
                break
        assert counted.keys() == replicas
        assert sum(counted.values()) == 10 and all(counted.values())

        pids = alive_actors(cluster, "ServeReplica:stts:SttsReplica")
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        # Serve notices, routes around the dead replica and starts another; bounded wait.
        deadline = time.monotonic() + 180
        streak = 0
        while streak < 5:
            assert time.monotonic() < deadline, "requests did not succeed again in 180 s"
            try:
                streak = streak + 1 if transcribe()[0] else 0
            except Exception:
                streak = 0
                time.sleep(1)
        while len(set(alive_actors(cluster, "ServeReplica:stts:SttsReplica")) - {pids[0]}) < 2:
            assert time.monotonic() < deadline, "Serve did not replace the replica in 180 s"
            time.sleep(1)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, stderr = server.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0, stderr
