"""The engine contract: load once, then ``transcribe(audio, options) -> Transcript``.

Engines receive 16 kHz mono float32 from :mod:`stts.audio`; they never decode or
resample. Heavy imports happen in :meth:`Engine.load`, never per request. An engine
states whether one instance may be called from several threads at once
(``Capabilities.thread_safe``); the service uses one instance per worker otherwise.
"""

from __future__ import annotations

import importlib.util
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from stts.errors import Cancelled, InvalidRequest
from stts.install import install_hint
from stts.languages import normalize_language
from stts.transcript import Segment, Transcript

__all__ = ["Cancelled"]  # engines raise it when their CancelToken is set

if TYPE_CHECKING:
    from stts.audio import AudioArray
    from stts.config import Settings
    from stts.engines.streaming import EngineStream

Task = Literal["transcribe", "translate"]
SegmentCallback = Callable[[Segment], None]


@dataclass(frozen=True, slots=True)
class VadParameters:
    """How voice activity detection cuts the audio (OpenAI's ``server_vad`` chunking)."""

    threshold: float | None = None
    min_silence_ms: int | None = None
    speech_pad_ms: int | None = None


@dataclass(frozen=True, slots=True)
class TranscribeOptions:
    """Per-request options, the same for every engine; engines ignore what they cannot do
    (faces refuse, up front, what an engine's capabilities say it cannot do)."""

    language: str | None = None
    task: Task = "transcribe"
    beam_size: int | None = None
    temperature: float | tuple[float, ...] | None = None
    initial_prompt: str | None = None
    vad_filter: bool | None = None
    word_timestamps: bool = False
    vad: VadParameters | None = None
    """Only with ``vad_filter``, for engines whose capabilities say ``vad``."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine can do, declared honestly."""

    languages: frozenset[str] | None = None
    """Languages it recognises (codes as :func:`stts.languages.normalize_language` gives
    them); ``None`` means many, not listed, an empty set one language that the model
    defines and the operator has not named. Requests for others are refused (400)."""
    word_timestamps: bool = False
    word_probabilities: bool = False
    """Its words carry the model's own probabilities (OpenAI's ``include[]=logprobs``)."""
    vad: bool = False
    """It can cut the audio at speech pauses found by voice activity detection, with
    :class:`VadParameters` (OpenAI's ``chunking_strategy``)."""
    translation: bool = False
    language_detection: bool = False
    streaming: bool = False
    thread_safe: bool = False

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly view."""
        return {
            "languages": (
                "multilingual"
                if self.languages is None
                else sorted(self.languages) or "one, set by the model"
            ),
            "word_timestamps": self.word_timestamps,
            "word_probabilities": self.word_probabilities,
            "vad": self.vad,
            "translation": self.translation,
            "language_detection": self.language_detection,
            "streaming": self.streaming,
            "thread_safe": self.thread_safe,
        }


@dataclass(frozen=True, slots=True)
class Availability:
    """Whether an engine could run here, found without loading a model."""

    installed: bool
    model_found: bool
    reason: str = ""
    model: str = ""
    models: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        """Installed and with a model to load."""
        return self.installed and self.model_found


@dataclass(slots=True)
class CancelToken:
    """Set by the service when the caller gave up; engines check it between segments."""

    _event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Ask the engine to stop as soon as it can."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once cancel() was called."""
        return self._event.is_set()


class Engine(ABC):
    """Base of every engine. Subclasses set ``name`` and ``extra`` and implement the rest."""

    name: ClassVar[str]
    extra: ClassVar[str] = ""
    """The pip extra that installs this engine's dependencies, e.g. ``whisper``."""

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        self.settings = settings
        self.model = model or self.default_model(settings)

    @classmethod
    def default_model(cls, settings: Settings) -> str:
        """Model used when the request names none."""
        return "default"

    @classmethod
    def known_models(cls, settings: Settings) -> list[str]:
        """Model names a request may ask for (configured by the operator, never paths)."""
        return [cls.default_model(settings)]

    @classmethod
    @abstractmethod
    def probe(cls, settings: Settings) -> Availability:
        """Cheap check (no model load, no heavy import): installed? model present?"""

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this engine can do."""

    @abstractmethod
    def load(self) -> None:
        """Load the model; called once, from a worker thread, before any transcribe()."""

    @abstractmethod
    def transcribe(
        self,
        audio: AudioArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        """Transcribe 16 kHz mono float32; call ``on_segment`` as segments are ready."""

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        """A live utterance on this loaded engine (see :mod:`stts.engines.streaming`).

        Only engines whose capabilities say ``streaming`` implement it. Called from a
        worker thread, possibly while another worker uses this instance (the service
        spreads streams over a non-thread-safe engine's instances): it touches nothing
        ``transcribe`` uses, and the stream's own state never lives on the engine.
        """
        raise InvalidRequest(f"engine {self.name!r} cannot transcribe a live stream")

    def detect_language(self, audio: AudioArray) -> list[tuple[str, float]]:
        """The languages the speech may be in with their probabilities, most likely first.

        Only engines whose capabilities say ``language_detection`` implement it.
        """
        raise InvalidRequest(f"engine {self.name!r} cannot detect the spoken language")

    def close(self) -> None:  # noqa: B027 - optional hook, most engines need nothing
        """Free the model; the instance is not used afterwards."""


def probe_model_dir(
    module: str, extra: str, env: str, kind: str, path: Path | None, model: str
) -> Availability | None:
    """The checks every engine whose model is a directory the operator names shares.

    Returns why the engine can't run (package missing, path unset, directory missing),
    or None when those pass and the engine's own checks of the directory may follow.
    """
    if importlib.util.find_spec(module) is None:
        return Availability(False, False, install_hint(extra), model, ())
    if path is None:
        return Availability(True, False, f"set {env} to a {kind} directory", model, ())
    if not path.is_dir():
        return Availability(True, False, f"model directory not found: {path}", model, ())
    return None


def model_dir_name(path: Path | None) -> str:
    """The model name of an engine whose model is a directory the operator names: the
    directory's name, ``none`` while unset."""
    return path.name if path is not None else "none"


def model_language(language: str | None) -> frozenset[str]:
    """The one language an operator says a single-language model speaks (normalised when
    stts knows it, as given otherwise); empty when unsaid."""
    if not language:
        return frozenset()
    return frozenset({normalize_language(language) or language})
