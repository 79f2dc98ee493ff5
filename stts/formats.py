"""Render a Transcript as text, json, verbose_json (OpenAI shape), srt or vtt.

Formats never know which engine produced the transcript.
"""

from __future__ import annotations

import enum
import json
import math
import re
from typing import Any

from stts.languages import language_name
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


# A run of dashes before ">" : the timing arrow of SRT and WebVTT, in any length.
_ARROW = re.compile(r"--+>")


def _cue_text(text: str) -> str:
    """A segment's text made safe for one SRT/WebVTT cue.

    A blank line ends a cue and a line with ``-->`` reads as a timing line, so text
    holding either would start cues of its own: lines are stripped and blank ones
    dropped (any line break, CR included), and every ``-->`` becomes ``->``.
    """
    lines = (line.strip() for line in text.splitlines())
    return _ARROW.sub("->", "\n".join(line for line in lines if line))


def _cues(transcript: Transcript) -> list[tuple[float, float, str]]:
    """Non-empty segments with monotonic, non-overlapping, non-zero-length times, their
    text fit for one cue (:func:`_cue_text`)."""
    cues: list[tuple[float, float, str]] = []
    last_end = 0.0
    for seg in transcript.segments:
        text = _cue_text(seg.text)
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


def _vtt_escape(text: str) -> str:
    """WebVTT cue text is markup: ``&`` and ``<`` must be written as character references
    (``&amp;``, ``&lt;``), or "AT&T" and "<b>" become entities and tags; ``>`` as
    ``&gt;`` too, as the spec's examples do."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(transcript: Transcript) -> str:
    """WebVTT: header, then ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` cues, text escaped."""
    blocks = [
        f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{_vtt_escape(text)}\n"
        for start, end, text in _cues(transcript)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def usage(transcript: Transcript) -> dict[str, Any]:
    """OpenAI's ``usage`` for models billed by duration: the audio's whole seconds, rounded
    up (as whisper-1 reports them)."""
    return {"type": "duration", "seconds": math.ceil(round(transcript.duration, 3))}


def logprobs(transcript: Transcript) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs``, one entry per word: the log of the engine's word probability.

    Only for engines whose words carry probabilities (``Capabilities.word_probabilities``);
    a word without one is left out rather than reported as certain.
    """
    return [
        {
            "token": w.word,
            "logprob": math.log(max(w.probability, 1e-12)),
            "bytes": list(w.word.encode("utf-8")),
        }
        for w in transcript.words
        if w.probability is not None
    ]


def to_json(transcript: Transcript, *, with_logprobs: bool = False) -> dict[str, Any]:
    """OpenAI's ``json`` response: the text and usage (and logprobs when asked)."""
    body: dict[str, Any] = {"text": transcript.text}
    if with_logprobs:
        body["logprobs"] = logprobs(transcript)
    body["usage"] = usage(transcript)
    return body


def to_verbose_json(
    transcript: Transcript, *, words: bool = True, segments: bool = True
) -> dict[str, Any]:
    """OpenAI's ``verbose_json``: task, language, duration, text, segments, words, usage.

    ``language`` is the name OpenAI writes (``english``). Engines that have no confidence
    figures report ``avg_logprob``, ``no_speech_prob`` and ``compression_ratio`` as null:
    0.0 would read as full confidence.
    """
    body: dict[str, Any] = {
        "task": transcript.task,
        "language": language_name(transcript.language) or transcript.language or "",
        "duration": transcript.duration,
        "text": transcript.text,
    }
    if segments:
        body["segments"] = [
            {
                "id": seg.id,
                "seek": seg.seek if seg.seek is not None else round(seg.start * 100),
                "start": seg.start,
                "end": seg.end,
                "text": seg.text,
                "tokens": list(seg.tokens),
                "temperature": seg.temperature if seg.temperature is not None else 0.0,
                "avg_logprob": seg.avg_logprob,
                "compression_ratio": seg.compression_ratio,
                "no_speech_prob": seg.no_speech_prob,
            }
            for seg in transcript.segments
        ]
    if words and transcript.words:
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in transcript.words]
    body["usage"] = usage(transcript)
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
