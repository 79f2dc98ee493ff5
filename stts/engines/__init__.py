"""ASR engines behind one contract; see :mod:`stts.engines.base`."""

from stts.engines.base import (
    Availability,
    CancelToken,
    Capabilities,
    Engine,
    TranscribeOptions,
)
from stts.engines.registry import engine_names, get_engine_class, register_engine

__all__ = [
    "Availability",
    "CancelToken",
    "Capabilities",
    "Engine",
    "TranscribeOptions",
    "engine_names",
    "get_engine_class",
    "register_engine",
]
