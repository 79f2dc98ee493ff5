"""Plain result types shared by engines, the service, formats and callers (times in seconds)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


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


def fit_times(transcript: Transcript) -> Transcript:
    """Every time within ``[0, duration]``, and segments with words spanning their words.

    Engines round segment bounds to their own grid (Whisper's last segment of an 11 s
    window ends at 11.0 s on audio of 10.4 s, a 1.959 s clip's cue at 2.0 s); subtitle
    players then show text after the audio ended. Word times, when computed, are the
    finer measurement.
    """
    duration = transcript.duration

    def clamp(t: float) -> float:
        return min(max(t, 0.0), duration)

    segments = []
    changed = False
    for seg in transcript.segments:
        words = tuple(
            w
            if 0.0 <= w.start <= w.end <= duration
            else replace(w, start=clamp(w.start), end=max(clamp(w.end), clamp(w.start)))
            for w in seg.words
        )
        start, end = clamp(seg.start), clamp(seg.end)
        if words:
            start, end = min(start, words[0].start), words[-1].end
        end = max(end, start)
        if (start, end) != (seg.start, seg.end) or words != seg.words:
            changed = True
            seg = replace(seg, start=start, end=end, words=words)
        segments.append(seg)
    return replace(transcript, segments=tuple(segments)) if changed else transcript
