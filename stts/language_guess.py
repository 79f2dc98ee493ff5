"""The spoken language as one engine judges it: :class:`LanguageGuess`, built from an
engine's ranking by :func:`guess_language`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stts.errors import TranscriptionFailed
from stts.slots import SlotKey


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
