"""Model ids every face shares: what ``model`` values mean and which ones are listed.

An id is an engine name (``pocketsphinx``), ``engine:model`` (``whisper:base``) or an
alias from the ``model_aliases`` setting. The default aliases (``whisper-1``,
``gpt-4o-transcribe``, ``gpt-4o-mini-transcribe``) name the default Whisper model, so
OpenAI clients that default to those names work unchanged; an alias whose engine is not
enabled falls to the default engine, as ``whisper-1`` always has.
"""

from __future__ import annotations

from stts.engines.registry import get_engine_class
from stts.errors import UnknownEngine, UnknownModel, shorten
from stts.service import EngineManager, SlotKey


def _not_served(model_id: str) -> UnknownModel:
    return UnknownModel(f"The model {shorten(model_id)} does not exist or is not served here")


def resolve_model(manager: EngineManager, model_id: str) -> SlotKey:
    """Map a ``model`` value (id or alias) to an (engine, model) pair; 404 if unknown."""
    model_id = model_id.strip()
    target = manager.settings.model_aliases.get(model_id)
    try:
        if target is not None:
            engine, _, model = target.partition(":")
            if engine not in manager.enabled:
                return manager.resolve(manager.default_engine)
            return manager.resolve(engine, model or None)
        engine, _, model = model_id.partition(":")
        return manager.resolve(engine, model or None)
    except (UnknownEngine, UnknownModel) as exc:
        raise _not_served(model_id) from exc


def engine_model_ids(manager: EngineManager) -> list[str]:
    """Engine names and ``engine:model`` pairs of the available enabled engines."""
    ids: list[str] = []
    for name in manager.enabled:
        engine_cls = get_engine_class(name)
        if not engine_cls.probe(manager.settings).available:
            continue
        ids.append(name)
        ids += [f"{name}:{m}" for m in engine_cls.known_models(manager.settings)]
    return list(dict.fromkeys(ids))


def model_ids(manager: EngineManager) -> list[str]:
    """Every id /v1/models lists: the aliases that resolve here, then the engines' ids."""
    aliases = []
    for alias in manager.settings.model_aliases:
        try:
            resolve_model(manager, alias)
        except UnknownModel:
            continue
        aliases.append(alias)
    return list(dict.fromkeys([*aliases, *engine_model_ids(manager)]))
