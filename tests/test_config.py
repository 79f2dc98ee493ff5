"""Settings precedence: overrides > environment > TOML file > defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from stts.config import Settings
from stts.errors import InvalidRequest
from stts.memory import _glibc
from stts.testing import free_port, wait_ready
from tests.conftest import corpus_file, requires_corpus


def test_defaults() -> None:
    s = Settings()
    assert s.default_engine == "whisper" and s.whisper.model == "base"
    assert s.engine_settings("whisper").workers == 1
    assert s.engine_settings("some-plugin").queue_size == 8


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "stts.toml"
    toml.write_text(
        'default_engine = "pocketsphinx"\nport = 9000\nfallback = ["pocketsphinx"]\n'
        '[whisper]\nbeam_size = 2\nqueue_size = 3\n[plugins.my-engine]\nworkers = 4\ncolour = "blue"\n'
    )
    s = Settings.load(toml)
    assert s.default_engine == "pocketsphinx" and s.port == 9000 and s.whisper.beam_size == 2
    assert s.engine_settings("my-engine").workers == 4
    monkeypatch.setenv("STTS_PORT", "9100")
    monkeypatch.setenv("STTS_WHISPER__BEAM_SIZE", "3")
    monkeypatch.setenv("STTS_ENGINES", "whisper, pocketsphinx")
    s = Settings.load(toml)
    assert s.port == 9100 and s.whisper.beam_size == 3 and s.whisper.queue_size == 3
    assert s.engines == ["whisper", "pocketsphinx"]
    s = Settings.load(toml, port=9200, host=None)
    assert s.port == 9200 and s.host == "127.0.0.1"


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="config file not found"):
        Settings.load(tmp_path / "nope.toml")


# Issue 17: the same through a real `stts serve` process, malloc_arena_max included.

HEAP_MAX = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: every thread arena is one such heap


def _thread_arenas(pid: int) -> int:
    """glibc thread arenas in a running process, read from /proc/<pid>/maps.

    Each arena past the main one is a 64 MiB heap: anonymous mappings that start on a
    64 MiB boundary and end exactly on the next (the part in use read-write, the rest
    reserved ``---p``).
    """
    regions = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        low, high = (int(x, 16) for x in fields[0].split("-"))
        regions.append((low, high, fields[1], fields[5] if len(fields) > 5 else ""))
    count = 0
    for low, _, perms, name in regions:
        if name or low % HEAP_MAX or not perms.startswith("rw"):
            continue
        inside = [r for r in regions if low <= r[0] < low + HEAP_MAX]
        if max(r[1] for r in inside) == low + HEAP_MAX and not any(r[3] for r in inside):
            count += 1
    return count


def _serve(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("STTS_", "MALLOC_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stts.cli", "serve", *args],
        env={**environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", 120)
    except BaseException:
        proc.kill()
        proc.wait(30)
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


def _busy_threads(url: str) -> None:
    """Eight transcriptions at once: the server's threads all allocate."""
    wav = corpus_file("pocketsphinx__001.wav").read_bytes()
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda _: (
                    httpx.post(
                        f"{url}/v1/audio/transcriptions",
                        files={"file": ("a.wav", wav)},
                        data={"model": "pocketsphinx"},
                        timeout=300,
                    ).status_code
                ),
                range(8),
            )
        )
    assert codes == [200] * 8


def _toml(path: Path, port: int, alias: str, extra: str = "") -> Path:
    path.write_text(
        f'port = {port}\nengines = ["pocketsphinx"]\ndefault_engine = "pocketsphinx"\n'
        f'model_aliases = {{ {alias} = "pocketsphinx" }}\n{extra}'
        "[pocketsphinx]\nworkers = 2\n"
    )
    return path


glibc = pytest.mark.skipif(_glibc() is None, reason="malloc arenas are glibc's")


@pytest.mark.slow
@requires_corpus
@glibc
def test_stts_serve_reads_STTS_CONFIG_under_env_and_flags_and_caps_malloc_arenas(
    tmp_path: Path,
) -> None:
    """STTS_CONFIG's file is read (its alias, its malloc_arena_max = 1: no thread arena
    in the running server); the environment beats it (max_bytes); a flag beats both (port)."""
    port_toml, port_env, port_flag = free_port(), free_port(), free_port()
    config = _toml(
        tmp_path / "stts.toml",
        port_toml,
        "house",
        "malloc_arena_max = 1\n[audio]\nmax_bytes = 20000\n",
    )
    env = {
        "STTS_CACHE_DIR": str(tmp_path),
        "STTS_CONFIG": str(config),
        "STTS_PORT": str(port_env),
        "STTS_AUDIO__MAX_BYTES": "60000",
    }
    proc = _serve(["--port", str(port_flag)], env, port_flag)
    try:
        url = f"http://127.0.0.1:{port_flag}"
        models = {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}
        assert "house" in models
        upload = f"{url}/v1/audio/transcriptions"
        form = {"model": "house"}
        small = httpx.post(upload, files={"file": ("a", b"\0" * 40_000)}, data=form, timeout=60)
        assert small.status_code == 415  # not 413: over the file's 20000, under the env's 60000
        big = httpx.post(upload, files={"file": ("a", b"\0" * 70_000)}, data=form, timeout=60)
        assert big.status_code == 413 and "60000" in big.json()["error"]["message"]
        _busy_threads(url)
        assert _thread_arenas(proc.pid) == 0
    finally:
        _stop(proc)
    for port in (port_toml, port_env):
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


@pytest.mark.slow
@requires_corpus
@glibc
def test_config_flag_beats_STTS_CONFIG_and_MALLOC_ARENA_MAX_beats_the_setting(
    tmp_path: Path,
) -> None:
    """--config wins over STTS_CONFIG; an operator's MALLOC_ARENA_MAX=8 wins over
    malloc_arena_max = 1 (no thread arena): several thread arenas appear."""
    port = free_port()
    other = _toml(tmp_path / "other.toml", port, "house")
    chosen = _toml(tmp_path / "chosen.toml", port, "garden")
    env = {
        "STTS_CACHE_DIR": str(tmp_path),
        "STTS_CONFIG": str(other),
        "STTS_MALLOC_ARENA_MAX": "1",
        "MALLOC_ARENA_MAX": "8",
    }
    proc = _serve(["--config", str(chosen)], env, port)
    try:
        url = f"http://127.0.0.1:{port}"
        models = {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=30).json()["data"]}
        assert "garden" in models and "house" not in models
        _busy_threads(url)
        assert _thread_arenas(proc.pid) >= 3  # capped at 1 it would be 0
    finally:
        _stop(proc)
