"""Language identification: which engine is asked (:func:`language_detector`), the job
that asks it (:func:`submit_language_job`), and its answer as :class:`LanguageGuess`,
built from the engine's ranking by :func:`guess_language`.

The manager waits on the job under the same deadlines as a transcription
(:meth:`~stts.service.EngineManager.detect_language`); there is no fallback, the answer
is that one engine's opinion.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stts.audio import SAMPLE_RATE, AudioArray
from stts.engines.base import CancelToken
from stts.engines.registry import get_engine_class
from stts.errors import TranscriptionFailed
from stts.slots import Reservation, SlotKey

if TYPE_CHECKING:
    from stts.service import EngineManager

LANGUAGE_WINDOW_S = 30.0
"""Engines look at the first 30 s of audio to tell its language."""


@dataclass(frozen=True, slots=True)
class LanguageGuess:
    """The spoken language as one engine judges it."""

    language: str
    probability: float
    ranked: tuple[tuple[str, float], ...]
    """The most likely languages with their probabilities, best first."""
    engine: str
    model: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {
            "language": self.language,
            "probability": self.probability,
            "languages": [{"language": lang, "probability": p} for lang, p in self.ranked],
            "engine": self.engine,
            "model": self.model,
        }


def guess_language(ranked: list[tuple[str, float]], key: SlotKey, top: int) -> LanguageGuess:
    """The ``top`` languages of an engine's ranking, best first, as one guess."""
    if not ranked:
        raise TranscriptionFailed(f"engine {key[0]!r} returned no language")
    ordered = sorted(ranked, key=lambda lp: lp[1], reverse=True)[:top]
    return LanguageGuess(
        ordered[0][0],
        round(ordered[0][1], 4),
        tuple((lang, round(p, 4)) for lang, p in ordered),
        key[0],
        key[1],
    )


@dataclass(frozen=True, slots=True)
class LanguageJob:
    """One engine's language identification, submitted: what waiting on it needs."""

    future: Future[list[tuple[str, float]]]
    key: SlotKey
    cancel: CancelToken
    timeout: float
    """Seconds the engine's work may take (the deadline of its first 30 s of audio)."""


def language_detector(manager: EngineManager) -> str:
    """The default engine if it can identify languages, else the first enabled that can."""
    for name in [manager.default_engine, *manager.enabled]:
        if get_engine_class(name)(manager.settings).capabilities.language_detection:
            return name
    return manager.default_engine  # it will say that it can't


def submit_language_job(
    manager: EngineManager,
    samples: AudioArray,
    engine: str | None,
    model: str | None,
    reservation: Reservation | None = None,
) -> LanguageJob:
    """Queue ``samples``' language identification on the reservation's engine, else on
    ``engine`` (by default :func:`language_detector`'s)."""
    if reservation is not None:
        key = reservation.key
    else:
        key = manager.resolve(engine or language_detector(manager), model)
    cancel = CancelToken()
    future = manager.slot(key).submit_call(
        lambda e: e.detect_language(samples), cancel, reservation
    )
    seconds = min(len(samples) / SAMPLE_RATE, LANGUAGE_WINDOW_S)
    return LanguageJob(future, key, cancel, manager.deadline(seconds))
