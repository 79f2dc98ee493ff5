"""stts on a Ray cluster (``stts[ray]``): batch transcription through Ray Data
(:mod:`stts.raycluster.batch`) and the HTTP app as a Ray Serve deployment
(:mod:`stts.raycluster.serve`). This package is the only part of stts that imports Ray.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from stts.errors import ConfigError, EngineUnavailable
from stts.install import install_hint

try:
    import ray
except ImportError as exc:  # pragma: no cover - the extra is absent
    raise EngineUnavailable(f"Ray is not installed: {install_hint('ray')}") from exc

__all__ = ["connect"]

# How long an explicit address may take to accept a TCP connection. Ray's own client
# retries an address where nothing listens for minutes before it fails.
REACH_TIMEOUT_S = 10.0


def _host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` of an explicit address (``ray://`` too); None for ``auto``/``local``."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _check_reachable(address: str) -> None:
    """ConfigError at once when nothing accepts a connection at an explicit address."""
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=REACH_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot join the Ray cluster at {address!r}: nothing answers there ({reason}); "
            "start it with `ray start --head` or pass its GCS address (host:port)"
        ) from None


def connect(address: str) -> None:
    """Join the cluster at ``address`` (``auto``: RAY_ADDRESS or the one on this machine;
    ``local``: start one inside this process), once per process. An explicit
    ``host:port`` that accepts no connection fails within ``REACH_TIMEOUT_S``."""
    if ray.is_initialized():
        return
    _check_reachable(address)
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address == "local":
            ray.init(include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address!r}: {exc}") from None
