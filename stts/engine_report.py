"""What ``stts engines``, ``/api/v1/engines`` and ``/v1/models`` say about an engine,
without loading it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stts.engines.base import Engine
from stts.engines.registry import get_engine_class

if TYPE_CHECKING:
    from stts.service import EngineManager


def engine_report(manager: EngineManager, name: str) -> dict[str, Any]:
    """Everything known about one engine, without loading it (for the API and CLI)."""
    engine_cls = get_engine_class(name)
    availability = engine_cls.probe(manager.settings)
    slots = [s for s in manager.loaded_slots() if s.name == name]
    loaded = [s for s in slots if s.state == "loaded"]
    failed = [s for s in slots if s.state == "failed"]
    caps = loaded[0].capabilities if loaded else None
    reason = availability.reason or (failed[0].error.message if failed and failed[0].error else "")
    conf = manager.settings.engine_settings(name)
    return {
        "name": name,
        "enabled": name in manager.enabled,
        "default": name == manager.default_engine,
        "installed": availability.installed,
        "model_found": availability.model_found,
        "available": availability.available and not failed,
        "loaded": bool(loaded),
        "model": availability.model,
        "models": list(availability.models),
        "reason": reason,
        "extra": engine_cls.extra,
        "capabilities": caps.as_dict() if caps else _static_capabilities(engine_cls, manager),
        "workers": conf.workers,
        "queue_size": conf.queue_size,
        "in_flight": sum(s.in_flight for s in slots),
        "max_streams": conf.max_streams,
        "open_streams": sum(s.open_streams for s in slots),
        "load_time_s": loaded[0].load_time_s if loaded else None,
        "idle_unload_s": conf.idle_unload_s,
        "idle_unloads": sum(s.unloads for s in slots),
    }


def _static_capabilities(engine_cls: type[Engine], manager: EngineManager) -> dict[str, object]:
    # An unloaded instance answers capabilities from its class defaults: no model load.
    return engine_cls(manager.settings).capabilities.as_dict()
