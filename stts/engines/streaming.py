"""The streaming side of the engine contract: ``engine.open_stream(options) -> EngineStream``.

A stream takes 16 kHz mono float32 as it arrives (:meth:`EngineStream.accept`) and says,
after each piece, which words became *committed* (final: they will not change, and
their concatenation is the final transcript) and what the *tentative* rest currently
reads (it may still change). :meth:`EngineStream.finish` commits what is left, and
:meth:`EngineStream.transcript` gives the whole :class:`~stts.transcript.Transcript`,
whose text is exactly the committed words joined.

Engines that recognise incrementally (PocketSphinx, Vosk) feed their own partial
results through here; Whisper, which only decodes whole windows, re-decodes its
unconfirmed audio and commits what two consecutive hypotheses agree on
(:class:`LocalAgreement`, "LocalAgreement-2" of Macháček et al. 2023,
whisper_streaming). Streams are single-threaded: the service calls one stream from one
worker at a time.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stts.transcript import Transcript, Word, segments_from_words

if TYPE_CHECKING:
    from stts.audio import AudioArray

_NORMAL = re.compile(r"[^\w']+")


@dataclass(frozen=True, slots=True)
class StreamUpdate:
    """What one piece of audio changed."""

    committed: tuple[Word, ...] = ()
    """Words that became final with this piece (their ``word`` keeps its leading space,
    so joining every committed word of a stream gives its final text)."""
    tentative: str = ""
    """The current guess after the committed words; replaces the previous guess."""

    @property
    def text(self) -> str:
        """The committed words of this update as text (leading space kept)."""
        return "".join(w.word for w in self.committed)


class EngineStream(ABC):
    """One live utterance on one engine instance."""

    @abstractmethod
    def accept(self, samples: AudioArray) -> StreamUpdate:
        """Take the next piece of 16 kHz mono float32; say what changed."""

    @abstractmethod
    def finish(self) -> StreamUpdate:
        """No more audio: commit the rest (the update says what became final)."""

    @abstractmethod
    def transcript(self) -> Transcript:
        """Everything committed so far (after :meth:`finish`: the whole utterance)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free what the stream holds (called once, also after finish)."""


def normalise(word: str) -> str:
    """A word as compared between hypotheses: case and punctuation ignored."""
    return _NORMAL.sub("", word.lower())


def common_prefix(a: list[Word], b: list[Word]) -> int:
    """How many leading words two hypotheses share (compared normalised)."""
    n = 0
    for left, right in zip(a, b, strict=False):
        if normalise(left.word) != normalise(right.word):
            break
        n += 1
    return n


class RepetitionGuard:
    """Drops committed words that would make an n-gram repeat over and over.

    Whisper on noise or a cut-off window can loop ("you you you you …", or a whole
    phrase again and again). Once the committed words end with an n-gram (n ≤ ``max_n``)
    said ``max_repeats`` times in a row, a word starting it once more is dropped, and so
    is the rest of that repetition: the loop is cut at a phrase boundary. A single word
    may come ``max_word_repeats`` times in a row ("one zero zero zero one" is speech).
    """

    def __init__(self, max_n: int = 6, max_repeats: int = 3, max_word_repeats: int = 4) -> None:
        self.max_n = max_n
        self.max_repeats = max_repeats
        self.max_word_repeats = max_word_repeats
        self.history: list[str] = []
        self._skipping: tuple[list[str], int] | None = None  # (phrase, next index)

    def _loop_start(self, key: str) -> list[str] | None:
        for n in range(1, self.max_n + 1):
            repeats = self.max_word_repeats if n == 1 else self.max_repeats
            span = n * repeats
            if len(self.history) < span:
                continue
            phrase = self.history[-n:]
            if key == phrase[0] and self.history[-span:] == phrase * repeats:
                return phrase
        return None

    def filter(self, words: list[Word]) -> list[Word]:
        """The words that may be committed, in order."""
        kept: list[Word] = []
        for word in words:
            key = normalise(word.word)
            if not key:
                kept.append(word)
                continue
            if self._skipping is not None:
                phrase, index = self._skipping
                if key == phrase[index]:
                    self._skipping = (phrase, (index + 1) % len(phrase))
                    continue
                self._skipping = None
            phrase_ = self._loop_start(key)
            if phrase_ is not None:
                self._skipping = (phrase_, 1 % len(phrase_))
                continue
            self.history.append(key)
            del self.history[: -self.max_n * (max(self.max_repeats, self.max_word_repeats) + 1)]
            kept.append(word)
        return kept


class LocalAgreement:
    """Commit the longest prefix two consecutive hypotheses agree on (LocalAgreement-2).

    Hypotheses are lists of timed words in stream time. Words ending at or before the
    committed end are ignored (already committed, or the model re-reading the overlap).
    """

    def __init__(self) -> None:
        self.committed: list[Word] = []
        self.previous: list[Word] = []
        self.guard = RepetitionGuard()

    @property
    def committed_end(self) -> float:
        """Stream time where the committed words end."""
        return self.committed[-1].end if self.committed else 0.0

    def _fresh(self, hypothesis: list[Word]) -> list[Word]:
        end = self.committed_end
        # Whisper re-reads the audio it is given: words well before the committed end
        # were heard already; around it, timestamps jitter, so the overlap is found by
        # the words themselves (up to 5 committed words repeated at the start).
        fresh = [w for w in hypothesis if w.end > end - 0.5]
        tail = [normalise(w.word) for w in self.committed[-5:]]
        words = [normalise(w.word) for w in fresh]
        drop = 0
        for n in range(min(len(tail), len(words)), 0, -1):
            if tail[-n:] == words[:n]:
                drop = n
                break
        # The committed end read again after a few other words: the pass began with words
        # it wrote over no audio (squeezed to nothing at the buffer start), then re-read
        # "by a". Two or more words that begin before the committed end (and end within
        # half a second of it) are that overlap; "I saw the cat, | the cat ran" is not.
        for start in range(1, min(len(words), 8)):
            for n in range(min(len(tail), len(words) - start), 1, -1):
                if (
                    start + n > drop
                    and tail[-n:] == words[start : start + n]
                    and fresh[start].start < end
                    and fresh[start + n - 1].end <= end + 0.5
                ):
                    drop = start + n
                    break
        if drop:
            return fresh[drop:]
        return [w for w in fresh if w.start >= end - 0.2]

    def _commit(self, words: list[Word]) -> list[Word]:
        kept = self.guard.filter(words)
        if kept and not self.committed:
            first = kept[0]
            kept[0] = Word(first.start, first.end, first.word.lstrip(), first.probability)
        elif kept and not kept[0].word.startswith(" "):
            first = kept[0]
            kept[0] = Word(first.start, first.end, " " + first.word, first.probability)
        self.committed += kept
        return kept

    def insert(self, hypothesis: list[Word], *, commit: bool = True) -> StreamUpdate:
        """A new hypothesis of the unconfirmed audio; commit what it confirms.

        ``commit`` off: the hypothesis is only shown (tentative) and kept to be compared
        with the next one; it confirms nothing (a pass that stopped short of the speech
        it was given).
        """
        fresh = self._fresh(hypothesis)
        agreed = common_prefix(self.previous, fresh) if commit else 0
        newly = self._commit(fresh[:agreed])
        self.previous = fresh[agreed:]
        return StreamUpdate(tuple(newly), "".join(w.word for w in self.previous).strip())

    def flush(self, hypothesis: list[Word] | None = None) -> StreamUpdate:
        """No more audio: commit the final hypothesis (or the last one) whole."""
        rest = self._fresh(hypothesis) if hypothesis is not None else self.previous
        newly = self._commit(rest)
        self.previous = []
        return StreamUpdate(tuple(newly), "")

    def transcript(self, duration: float, language: str | None, model: str) -> Transcript:
        """Everything committed, grouped into segments at pauses."""
        segments = segments_from_words(self.committed, 0.8, spaced=True)
        return Transcript(
            text="".join(w.word for w in self.committed).strip(),
            segments=tuple(segments),
            duration=round(duration, 3),
            language=language,
            model=model,
        )
