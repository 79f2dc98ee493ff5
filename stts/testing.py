"""Helpers for tests and benchmarks that need a real ``stts serve`` process on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import IO

import httpx


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 120.0) -> None:
    """Poll /ready until it answers 200; fail if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not become ready in {timeout:.0f} s")


def spawn_server(
    port: int,
    env: dict[str, str] | None = None,
    *,
    stderr: int | IO[bytes] | None = subprocess.DEVNULL,
    timeout: float = 120.0,
) -> subprocess.Popen[bytes]:
    """Start ``python -m stts.cli serve`` on 127.0.0.1:``port`` and wait until it is ready.

    ``env`` is added to this process's environment (``STTS_*`` settings). The command
    line is fixed; only the environment varies.
    """
    full_env = {**os.environ, "STTS_PORT": str(port), "STTS_HOST": "127.0.0.1", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stts.cli", "serve"],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout)
    except BaseException:
        proc.kill()
        proc.wait(30)
        raise
    return proc
