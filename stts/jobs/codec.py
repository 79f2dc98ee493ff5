"""Transcripts to JSON and back, for checkpoints and stored results."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from stts.transcript import Segment, Transcript, Word


def transcript_to_dict(transcript: Transcript) -> dict[str, Any]:
    """A JSON-friendly dict of every field."""
    return asdict(transcript)


def transcript_from_dict(data: dict[str, Any]) -> Transcript:
    """The inverse of :func:`transcript_to_dict`."""
    segments = tuple(
        Segment(
            **{
                **seg,
                "words": tuple(Word(**w) for w in seg.get("words", ())),
                "tokens": tuple(seg.get("tokens", ())),
            }
        )
        for seg in data.get("segments", ())
    )
    fields = {k: v for k, v in data.items() if k not in ("segments", "attempts")}
    return Transcript(**fields, segments=segments, attempts=tuple(data.get("attempts", ())))


def shifted(transcript: Transcript, offset_s: float, first_id: int) -> tuple[Segment, ...]:
    """The transcript's segments moved ``offset_s`` later and numbered from ``first_id``."""
    if offset_s == 0:  # times exactly as the engine gave them
        return tuple(replace(seg, id=first_id + i) for i, seg in enumerate(transcript.segments))
    return tuple(
        replace(
            seg,
            id=first_id + i,
            start=round(seg.start + offset_s, 3),
            end=round(seg.end + offset_s, 3),
            words=tuple(
                replace(w, start=round(w.start + offset_s, 3), end=round(w.end + offset_s, 3))
                for w in seg.words
            ),
            seek=None if seg.seek is None else seg.seek + round(offset_s * 100),
        )
        for i, seg in enumerate(transcript.segments)
    )
