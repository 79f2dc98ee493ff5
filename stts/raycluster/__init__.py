"""stts on a Ray cluster (``stts[ray]``): batch transcription through Ray Data
(:mod:`stts.raycluster.batch`) and the HTTP app as a Ray Serve deployment
(:mod:`stts.raycluster.serve`). This package is the only part of stts that imports Ray.
"""

from __future__ import annotations

import logging
from typing import Any

from stts.errors import ConfigError, EngineUnavailable
from stts.install import install_hint

try:
    import ray
except ImportError as exc:  # pragma: no cover - the extra is absent
    raise EngineUnavailable(f"Ray is not installed: {install_hint('ray')}") from exc

__all__ = ["connect"]


def connect(address: str) -> None:
    """Join the cluster at ``address`` (``auto``: RAY_ADDRESS or the one on this machine;
    ``local``: start one inside this process), once per process."""
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address == "local":
            ray.init(include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address!r}: {exc}") from None
