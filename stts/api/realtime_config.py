"""Realtime transcription session settings: parsed from ``session.update`` (GA) or
``transcription_session.update`` (beta), and shown back in either shape.

Only the fields present in an update change (``null`` clears, as in OpenAI's API); an
update with any invalid field is refused whole and changes nothing. Fields stts does
not use (``noise_reduction``, ``create_response``, ``client_secret``…) are accepted and
ignored, so clients written for OpenAI keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from stts.catalogue import resolve_model
from stts.engines.base import TranscribeOptions
from stts.engines.registry import get_engine_class
from stts.errors import InvalidRequest, shorten
from stts.pcm import PCM_RATES, Encoding
from stts.service import EngineManager, SlotKey

Dialect = Literal["ga", "beta"]

TENTATIVE_INCLUDE = "stts.tentative"
"""The ``include`` value that asks for tentative text (:data:`TENTATIVE_EVENT`)."""
TENTATIVE_EVENT = "stts.input_audio_transcription.tentative"
"""stts's one event type of its own: the not-yet-final rest of an item's text."""

_GA_FORMATS: dict[str, Encoding] = {
    "audio/pcm": "pcm16",
    "audio/pcmu": "pcmu",
    "audio/pcma": "pcma",
}
_BETA_FORMATS: dict[str, Encoding] = {"pcm16": "pcm16", "g711_ulaw": "pcmu", "g711_alaw": "pcma"}
_EAGERNESS_SILENCE_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 250}


class ClientError(InvalidRequest):
    """A client event stts cannot take; answered with an ``error`` event, the session
    goes on. ``code`` is OpenAI's (``invalid_json``, ``invalid_value``...)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.code = code


def invalid(param: str, message: str) -> ClientError:
    """An ``invalid_value`` error on one field."""
    return ClientError("invalid_value", message, param)


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """Server VAD knobs (``semantic_vad`` is served as server VAD, its eagerness read as a
    silence duration)."""

    type: str = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    eagerness: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """As OpenAI shows it."""
        if self.type == "semantic_vad":
            return {"type": self.type, "eagerness": self.eagerness or "auto"}
        return {
            "type": self.type,
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
        }


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What one session transcribes with; replaced whole by each accepted update."""

    key: SlotKey
    model: str
    encoding: Encoding = "pcm16"
    rate: int = 24000
    language: str | None = None
    prompt: str | None = None
    turn_detection: TurnDetection | None = TurnDetection()
    noise_reduction: Any = None
    include: tuple[str, ...] | None = None

    @property
    def options(self) -> TranscribeOptions:
        """The engine options of this session's items."""
        return TranscribeOptions(language=self.language, initial_prompt=self.prompt or None)

    @property
    def tentative(self) -> bool:
        """Whether the client asked for tentative text."""
        return TENTATIVE_INCLUDE in (self.include or ())

    def _format(self, dialect: Dialect) -> Any:
        if dialect == "beta":
            return next(k for k, v in _BETA_FORMATS.items() if v == self.encoding)
        kind = next(k for k, v in _GA_FORMATS.items() if v == self.encoding)
        return {"type": kind, "rate": self.rate} if self.encoding == "pcm16" else {"type": kind}

    def as_dict(self, dialect: Dialect, session_id: str, expires_at: int) -> dict[str, Any]:
        """The session object of ``session.created``/``.updated`` (or the beta
        ``transcription_session.*``), with every effective setting."""
        transcription = {"model": self.model, "language": self.language, "prompt": self.prompt}
        turn = self.turn_detection.as_dict() if self.turn_detection else None
        include = list(self.include) if self.include is not None else None
        if dialect == "beta":
            return {
                "id": session_id,
                "object": "realtime.transcription_session",
                "expires_at": expires_at,
                "input_audio_noise_reduction": self.noise_reduction,
                "turn_detection": turn,
                "input_audio_format": self._format(dialect),
                "input_audio_transcription": transcription,
                "client_secret": None,
                "include": include,
            }
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": session_id,
            "expires_at": expires_at,
            "audio": {
                "input": {
                    "format": self._format(dialect),
                    "transcription": transcription,
                    "noise_reduction": self.noise_reduction,
                    "turn_detection": turn,
                }
            },
            "include": include,
        }


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(param, f"Invalid type for '{param}': expected an object.")
    return value


def _optional_str(value: Any, param: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid(param, f"Invalid type for '{param}': expected a string.")
    return value


def _number(obj: dict[str, Any], name: str, param: str, low: float, high: float) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise invalid(
            f"{param}.{name}",
            f"Invalid value for '{param}.{name}': expected a number from {low:g} to {high:g}.",
        )
    return float(value)


def check_model(manager: EngineManager, model_id: str, param: str) -> SlotKey:
    """The (engine, model) of a model id, if it can transcribe a live stream."""
    try:
        key = resolve_model(manager, model_id)
    except InvalidRequest as exc:
        exc.param = param
        raise
    slot = next((s for s in manager.loaded_slots() if (s.name, s.model) == key), None)
    caps = slot.capabilities if slot is not None else None
    if caps is None:  # not loaded: the engine answers from its files, loading nothing
        caps = get_engine_class(key[0])(manager.settings, key[1]).capabilities
    if not caps.streaming:
        raise invalid(
            param,
            f"The model {shorten(model_id)} cannot transcribe live audio here; "
            "use a streaming engine (see /api/v1/engines)",
        )
    return key


def _turn_detection(value: Any, param: str) -> TurnDetection | None:
    if value is None:
        return None
    obj = _object(value, param)
    kind = obj.get("type", "server_vad")
    if kind == "semantic_vad":
        eagerness = obj.get("eagerness") or "auto"
        if eagerness not in _EAGERNESS_SILENCE_MS:
            raise invalid(f"{param}.eagerness", "Invalid value for eagerness.")
        return TurnDetection(
            "semantic_vad",
            silence_duration_ms=_EAGERNESS_SILENCE_MS[eagerness],
            eagerness=eagerness,
        )
    if kind != "server_vad":
        raise invalid(
            f"{param}.type",
            f"Invalid value: {shorten(kind)}. Supported values are: 'server_vad' and "
            "'semantic_vad'.",
        )
    threshold = _number(obj, "threshold", param, 0.0, 1.0)
    prefix = _number(obj, "prefix_padding_ms", param, 0, 5000)
    silence = _number(obj, "silence_duration_ms", param, 0, 10_000)
    default = TurnDetection()
    return TurnDetection(
        "server_vad",
        threshold=default.threshold if threshold is None else threshold,
        prefix_padding_ms=default.prefix_padding_ms if prefix is None else int(prefix),
        silence_duration_ms=default.silence_duration_ms if silence is None else int(silence),
    )


def _include(value: Any, param: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(param, f"Invalid type for '{param}': expected an array of strings.")
    return tuple(value)


def _transcription(
    manager: EngineManager, config: SessionConfig, value: Any, param: str
) -> SessionConfig:
    if value is None:  # stts always transcribes: null means the default model
        key = manager.resolve(None)
        return replace(config, key=key, model=f"{key[0]}:{key[1]}", language=None, prompt=None)
    obj = _object(value, param)
    if "model" in obj:
        model = _optional_str(obj["model"], f"{param}.model")
        if model is None:
            key = manager.resolve(None)
            config = replace(config, key=key, model=f"{key[0]}:{key[1]}")
        else:
            config = replace(config, key=check_model(manager, model, f"{param}.model"), model=model)
    if "language" in obj:
        config = replace(config, language=_optional_str(obj["language"], f"{param}.language"))
    if "prompt" in obj:
        config = replace(config, prompt=_optional_str(obj["prompt"], f"{param}.prompt"))
    return config


def _ga_format(config: SessionConfig, value: Any, param: str) -> SessionConfig:
    obj = _object(value, param)
    encoding = _GA_FORMATS.get(obj.get("type"))  # type: ignore[arg-type]
    if encoding is None:
        raise invalid(
            f"{param}.type",
            f"Invalid value: {shorten(str(obj.get('type')))}. Supported values are: "
            "'audio/pcm', 'audio/pcmu' and 'audio/pcma'.",
        )
    rate = 8000
    if encoding == "pcm16":
        rate = obj.get("rate", 24000)
        if rate not in PCM_RATES or isinstance(rate, bool):
            raise invalid(
                f"{param}.rate",
                f"Invalid value for '{param}.rate': supported rates are "
                + ", ".join(map(str, PCM_RATES))
                + ".",
            )
    return replace(config, encoding=encoding, rate=int(rate))


def apply_update(
    manager: EngineManager, config: SessionConfig, session: Any, *, beta: bool
) -> SessionConfig:
    """The settings after one update (ClientError, settings unchanged, if any field is
    invalid; the language is checked against the engine the update leaves chosen)."""
    session = _object(session, "session")
    beta_fields = ("input_audio_format", "input_audio_transcription", "turn_detection")
    if beta or ("audio" not in session and any(f in session for f in beta_fields)):
        config = _apply_beta(manager, config, session)
    else:
        config = _apply_ga(manager, config, session)
    if "include" in session:
        config = replace(config, include=_include(session["include"], "session.include"))
    if config.language is not None:
        try:
            options = manager.check_options(config.key, config.options)
        except InvalidRequest as exc:
            exc.param = "session.audio.input.transcription.language"
            raise
        config = replace(config, language=options.language)
    return config


def _apply_ga(
    manager: EngineManager, config: SessionConfig, session: dict[str, Any]
) -> SessionConfig:
    kind = session.get("type", "transcription")
    if kind != "transcription":
        raise invalid(
            "session.type",
            f"Invalid value: {shorten(str(kind))}. This server serves transcription sessions "
            "only: session.type must be 'transcription'.",
        )
    if session.get("audio") is None:
        return config
    audio = _object(session["audio"], "session.audio")
    if audio.get("input") is None:
        return config
    param = "session.audio.input"
    audio_in = _object(audio["input"], param)
    if "format" in audio_in and audio_in["format"] is not None:
        config = _ga_format(config, audio_in["format"], f"{param}.format")
    if "transcription" in audio_in:
        config = _transcription(
            manager, config, audio_in["transcription"], f"{param}.transcription"
        )
    if "turn_detection" in audio_in:
        turn = _turn_detection(audio_in["turn_detection"], f"{param}.turn_detection")
        config = replace(config, turn_detection=turn)
    if "noise_reduction" in audio_in:
        config = replace(config, noise_reduction=audio_in["noise_reduction"])
    return config


def _apply_beta(
    manager: EngineManager, config: SessionConfig, session: dict[str, Any]
) -> SessionConfig:
    if session.get("input_audio_format") is not None:
        encoding = _BETA_FORMATS.get(session["input_audio_format"])
        if encoding is None:
            raise invalid(
                "session.input_audio_format",
                f"Invalid value: {shorten(str(session['input_audio_format']))}. Supported "
                "values are: 'pcm16', 'g711_ulaw' and 'g711_alaw'.",
            )
        config = replace(config, encoding=encoding, rate=24000 if encoding == "pcm16" else 8000)
    if "input_audio_transcription" in session:
        config = _transcription(
            manager,
            config,
            session["input_audio_transcription"],
            "session.input_audio_transcription",
        )
    if "turn_detection" in session:
        turn = _turn_detection(session["turn_detection"], "session.turn_detection")
        config = replace(config, turn_detection=turn)
    if "input_audio_noise_reduction" in session:
        config = replace(config, noise_reduction=session["input_audio_noise_reduction"])
    return config
