"""Plain result types shared by engines, the service, formats and callers (times in seconds)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Word:
    """One recognised word with its time span."""

    start: float
    end: float
    word: str
    probability: float | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of speech, usually a sentence or a phrase."""

    id: int
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    temperature: float | None = None
    compression_ratio: float | None = None
    """The four above are the decoder's own figures; None from engines that have none."""
    seek: int | None = None
    """Whisper: the 10 ms frame where the window this segment was decoded from begins."""
    tokens: tuple[int, ...] = ()
    """Whisper: the token ids of the segment's text."""


@dataclass(frozen=True, slots=True)
class Transcript:
    """What an engine heard in one piece of audio.

    ``engine``, ``model`` and ``fallback`` say who produced it: the service fills them in,
    so callers know which engine answered and whether it was a fallback.
    """

    text: str
    segments: tuple[Segment, ...]
    duration: float
    language: str | None = None
    engine: str = ""
    model: str = ""
    fallback: bool = False
    task: str = "transcribe"
    attempts: tuple[str, ...] = field(default_factory=tuple)

    @property
    def words(self) -> tuple[Word, ...]:
        """All words of all segments, in order."""
        return tuple(w for s in self.segments for w in s.words)


def join_segment_texts(segments: tuple[Segment, ...] | list[Segment]) -> str:
    """Full text from segments: stripped pieces joined by single spaces."""
    return " ".join(s.text.strip() for s in segments if s.text.strip())


def segments_from_words(
    words: list[Word], pause_s: float = 0.6, *, spaced: bool = False
) -> list[Segment]:
    """Group timed words into segments, starting a new one at every pause of ``pause_s``.

    ``spaced``: the words carry their own leading spaces (Whisper's), so a segment's text
    is them joined as they are, not with a space between.
    """
    groups: list[list[Word]] = []
    for word in words:
        if groups and word.start - groups[-1][-1].end < pause_s:
            groups[-1].append(word)
        else:
            groups.append([word])
    return [
        Segment(
            id=i,
            start=g[0].start,
            end=g[-1].end,
            text="".join(w.word for w in g).strip() if spaced else " ".join(w.word for w in g),
            words=tuple(g),
        )
        for i, g in enumerate(groups)
    ]
