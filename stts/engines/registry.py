"""Engine registry: name -> engine class.

Built-in engines are referenced by import path and imported only when asked for.
Third-party packages add engines through the entry point group ``stts.engines``
(``name = "package.module:EngineClass"``); only the one asked for is loaded, and an
unknown name raises :class:`stts.errors.UnknownEngine` instead of returning None.
"""

from __future__ import annotations

import importlib
import logging
import threading
from importlib.metadata import entry_points

from stts.engines.base import Engine
from stts.errors import EngineUnavailable, UnknownEngine

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "stts.engines"

_BUILTIN: dict[str, str] = {
    "whisper": "stts.engines.whisper:WhisperEngine",
    "pocketsphinx": "stts.engines.pocketsphinx:PocketSphinxEngine",
    "vosk": "stts.engines.vosk:VoskEngine",
    "wav2vec2": "stts.engines.wav2vec2:Wav2Vec2Engine",
}

_registered: dict[str, type[Engine]] = {}
_resolved: dict[str, type[Engine]] = {}
_lock = threading.Lock()


def register_engine(name: str, engine_cls: type[Engine]) -> None:
    """Register an engine class in-process (plugins without entry points, tests)."""
    with _lock:
        _registered[name] = engine_cls
        _resolved.pop(name, None)


def unregister_engine(name: str) -> None:
    """Remove an engine registered with :func:`register_engine`."""
    with _lock:
        _registered.pop(name, None)
        _resolved.pop(name, None)


def _entry_point_targets() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def engine_names() -> list[str]:
    """Every engine name known: built-in, entry points and registered."""
    names = set(_BUILTIN) | set(_entry_point_targets()) | set(_registered)
    return sorted(names)


def get_engine_class(name: str) -> type[Engine]:
    """The engine class for ``name``; imports its module (light: no model, no heavy deps)."""
    with _lock:
        if name in _registered:
            return _registered[name]
        if name in _resolved:
            return _resolved[name]
    target = _BUILTIN.get(name) or _entry_point_targets().get(name)
    if target is None:
        raise UnknownEngine(f"unknown engine {name!r}; known engines: {', '.join(engine_names())}")
    module_name, _, attr = target.partition(":")
    try:
        engine_cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        logger.exception("engine %s could not be imported from %s", name, target)
        raise EngineUnavailable(f"engine {name!r} could not be imported") from exc
    if not (isinstance(engine_cls, type) and issubclass(engine_cls, Engine)):
        raise EngineUnavailable(f"engine {name!r} does not implement stts.engines.base.Engine")
    with _lock:
        _resolved[name] = engine_cls
    return engine_cls
