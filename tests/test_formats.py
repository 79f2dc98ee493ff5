"""Renderers: well-formed, monotonic subtitles and the OpenAI verbose_json shape."""

from __future__ import annotations

import json
import re

from stts.formats import ResponseFormat, render, to_verbose_json
from stts.transcript import Segment, Transcript, Word

TRANSCRIPT = Transcript(
    text="Hello there. General Kenobi.",
    segments=(
        Segment(
            0,
            0.0,
            1.5,
            "Hello there.",
            (Word(0.0, 0.6, "Hello", 0.9), Word(0.7, 1.5, "there.", 0.8)),
        ),
        # Overlapping start and an empty segment: renderers must still emit monotonic cues.
        Segment(
            1,
            1.4,
            3725.25,
            "General Kenobi.",
            (Word(1.6, 2.0, "General"), Word(2.1, 3725.25, "Kenobi.")),
        ),
        Segment(2, 3725.25, 3725.25, "   "),
    ),
    duration=3726.0,
    language="en",
)


def _cue_times(body: str, sep: str) -> list[tuple[str, str]]:
    stamp = rf"\d{{2}}:\d{{2}}:\d{{2}}{re.escape(sep)}\d{{3}}"
    return re.findall(rf"^({stamp}) --> ({stamp})$", body, flags=re.M)


def test_srt_is_numbered_and_monotonic() -> None:
    body = render(TRANSCRIPT, "srt")
    assert body.startswith("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n")
    times = _cue_times(body, ",")
    assert times == [("00:00:00,000", "00:00:01,500"), ("00:00:01,500", "01:02:05,250")]
    assert "   " not in body


def test_vtt_has_header_and_dot_millis() -> None:
    body = render(TRANSCRIPT, ResponseFormat.vtt)
    assert body.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n")
    assert len(_cue_times(body, ".")) == 2


def test_text_and_json() -> None:
    assert render(TRANSCRIPT, "text") == "Hello there. General Kenobi.\n"
    assert json.loads(render(TRANSCRIPT, "json")) == {
        "text": "Hello there. General Kenobi.",
        "usage": {"type": "duration", "seconds": 3726},  # OpenAI: whole seconds, rounded up
    }


def test_verbose_json_has_the_openai_shape() -> None:
    body = json.loads(render(TRANSCRIPT, "verbose_json"))
    assert set(body) == {"task", "language", "duration", "text", "segments", "words", "usage"}
    assert body["task"] == "transcribe" and body["language"] == "english"
    seg_keys = {
        "id",
        "seek",
        "start",
        "end",
        "text",
        "tokens",
        "temperature",
        "avg_logprob",
        "compression_ratio",
        "no_speech_prob",
    }
    assert all(set(s) == seg_keys for s in body["segments"])
    # No engine figures in these segments: null, never a 0.0 that reads as certainty.
    assert all(s["avg_logprob"] is None and s["no_speech_prob"] is None for s in body["segments"])
    assert [s["seek"] for s in body["segments"]] == [0, 140, 372525]  # start in 10 ms frames
    assert body["words"][0] == {"word": "Hello", "start": 0.0, "end": 0.6}
    assert "words" not in to_verbose_json(TRANSCRIPT, words=False)
    assert "segments" not in to_verbose_json(TRANSCRIPT, segments=False)


def test_empty_transcript_renders_empty_but_valid() -> None:
    empty = Transcript("", (), 1.0)
    assert render(empty, "srt") == ""
    assert render(empty, "vtt") == "WEBVTT\n\n"
    assert json.loads(render(empty, "verbose_json"))["segments"] == []


# A caller's (or an engine's) text that would forge cues of its own in SRT or WebVTT: a
# blank line ends a cue, and a line with "-->" reads as a timing line.
FORGING = Transcript(
    text="x",
    segments=(
        Segment(0, 0.0, 1.0, "x\n\n2\n00:00:05,000 --> 00:00:06,000\ninjected cue"),
        Segment(1, 1.0, 2.0, "a\r\n\r\n00:00:05.000 ---> 00:00:06.000\r\nb"),
        Segment(2, 2.0, 3.0, "left -- > right --> end \n \t \n last"),
    ),
    duration=3.0,
)


def _blocks(body: str) -> list[list[str]]:
    """A subtitle file's cues as a reader sees them: blocks of lines between blank lines."""
    return [block.splitlines() for block in re.split(r"\n\s*\n", body.strip()) if block]


def test_cue_text_cannot_forge_cues_in_srt() -> None:
    body = render(FORGING, "srt")
    blocks = _blocks(body)
    assert [b[0] for b in blocks] == ["1", "2", "3"]
    assert body.count("-->") == 3  # the three timing lines only
    assert _cue_times(body, ",") == [
        ("00:00:00,000", "00:00:01,000"),
        ("00:00:01,000", "00:00:02,000"),
        ("00:00:02,000", "00:00:03,000"),
    ]
    assert blocks[0][2:] == ["x", "2", "00:00:05,000 -> 00:00:06,000", "injected cue"]
    assert blocks[1][2:] == ["a", "00:00:05.000 -> 00:00:06.000", "b"]
    assert blocks[2][2:] == ["left -- > right -> end", "last"]
    assert "\r" not in body


def test_cue_text_cannot_forge_cues_in_vtt() -> None:
    body = render(FORGING, "vtt")
    blocks = _blocks(body)
    assert blocks[0] == ["WEBVTT"]
    assert len(blocks) == 4  # the header and one block per segment
    assert body.count("-->") == 3
    assert len(_cue_times(body, ".")) == 3
    assert blocks[1][1:] == ["x", "2", "00:00:05,000 -&gt; 00:00:06,000", "injected cue"]
    assert blocks[2][1:] == ["a", "00:00:05.000 -&gt; 00:00:06.000", "b"]
    assert "\r" not in body


def test_vtt_cue_text_is_escaped_and_srt_kept() -> None:
    """WebVTT cue text is markup (``&`` and ``<`` start references and tags); SubRip has
    no escaping, its players read the text as it is."""
    said = Transcript(
        text="AT&T <b>bold</b> 3 > 2",
        segments=(Segment(0, 0.0, 1.0, "AT&T <b>bold</b> 3 > 2 &amp;"),),
        duration=1.0,
    )
    assert _blocks(render(said, "vtt"))[1][1:] == [
        "AT&amp;T &lt;b&gt;bold&lt;/b&gt; 3 &gt; 2 &amp;amp;"
    ]
    assert _blocks(render(said, "srt"))[0][2:] == ["AT&T <b>bold</b> 3 > 2 &amp;"]
