"""Render a Transcript as text, json, verbose_json (OpenAI shape), srt or vtt.

Formats never know which engine produced the transcript.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from stts.transcript import Transcript


class ResponseFormat(str, enum.Enum):
    """Output formats, named as in the OpenAI audio API."""

    json = "json"
    text = "text"
    srt = "srt"
    verbose_json = "verbose_json"
    vtt = "vtt"


MEDIA_TYPES: dict[ResponseFormat, str] = {
    ResponseFormat.json: "application/json",
    ResponseFormat.verbose_json: "application/json",
    ResponseFormat.text: "text/plain; charset=utf-8",
    ResponseFormat.srt: "application/x-subrip; charset=utf-8",
    ResponseFormat.vtt: "text/vtt; charset=utf-8",
}

FILE_SUFFIXES: dict[ResponseFormat, str] = {
    ResponseFormat.json: ".json",
    ResponseFormat.verbose_json: ".json",
    ResponseFormat.text: ".txt",
    ResponseFormat.srt: ".srt",
    ResponseFormat.vtt: ".vtt",
}


def _timestamp(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _cues(transcript: Transcript) -> list[tuple[float, float, str]]:
    """Non-empty segments with monotonic, non-overlapping, non-zero-length times."""
    cues: list[tuple[float, float, str]] = []
    last_end = 0.0
    for seg in transcript.segments:
        text = seg.text.strip()
        if not text:
            continue
        start = max(seg.start, last_end)
        end = max(seg.end, start + 0.001)
        cues.append((start, end, text))
        last_end = end
    return cues


def to_text(transcript: Transcript) -> str:
    """Plain text, one line, newline-terminated."""
    return transcript.text + "\n"


def to_srt(transcript: Transcript) -> str:
    """SubRip: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``."""
    blocks = [
        f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
        for i, (start, end, text) in enumerate(_cues(transcript), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    """WebVTT: header, then ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` cues."""
    blocks = [
        f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text}\n"
        for start, end, text in _cues(transcript)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_json(transcript: Transcript) -> dict[str, Any]:
    """OpenAI's ``json`` response: just the text."""
    return {"text": transcript.text}


def to_verbose_json(
    transcript: Transcript, *, words: bool = True, segments: bool = True
) -> dict[str, Any]:
    """OpenAI's ``verbose_json``: task, language, duration, text, segments, words."""
    body: dict[str, Any] = {
        "task": transcript.task,
        "language": transcript.language or "",
        "duration": transcript.duration,
        "text": transcript.text,
    }
    if segments:
        body["segments"] = [
            {
                "id": seg.id,
                "seek": 0,
                "start": seg.start,
                "end": seg.end,
                "text": seg.text,
                "tokens": [],
                "temperature": seg.temperature if seg.temperature is not None else 0.0,
                "avg_logprob": seg.avg_logprob if seg.avg_logprob is not None else 0.0,
                "compression_ratio": (
                    seg.compression_ratio if seg.compression_ratio is not None else 0.0
                ),
                "no_speech_prob": seg.no_speech_prob if seg.no_speech_prob is not None else 0.0,
            }
            for seg in transcript.segments
        ]
    if words and transcript.words:
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in transcript.words]
    return body


def render(transcript: Transcript, fmt: ResponseFormat | str) -> str:
    """The transcript as a string in ``fmt`` (JSON formats serialised)."""
    fmt = ResponseFormat(fmt)
    if fmt is ResponseFormat.text:
        return to_text(transcript)
    if fmt is ResponseFormat.srt:
        return to_srt(transcript)
    if fmt is ResponseFormat.vtt:
        return to_vtt(transcript)
    body = to_json(transcript) if fmt is ResponseFormat.json else to_verbose_json(transcript)
    return json.dumps(
        body, ensure_ascii=False, indent=2 if fmt is ResponseFormat.verbose_json else None
    )
