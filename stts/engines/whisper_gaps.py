"""Gap repair for Whisper's long-form decoding with the VAD filter (issue 14).

With ``vad_filter`` faster-whisper joins Silero VAD's speech chunks end to end and decodes
the joined audio in 30 s windows; now and then the decoder skips a whole utterance
inside a window although the VAD covered it (the utterance is heard when decoded on its
own). Gap repair decodes as faster-whisper does, from the same chunks (computed here once,
not twice), and watches the words as they come: a stretch of a speech chunk that no word
covers, at least ``min_gap_s`` long, in which Silero still hears speech, is decoded again
on its own (prompted with the text before it), and its words are put in time order
between the segments around it. Segments are still produced one by one, so a caller that
streams segments keeps doing so; only a repaired stretch waits for its re-decode.

The same Silero probabilities (one VAD run per file) feed the word-time repairs of
``whisper_timing`` when ``vad_word_times`` is on.

A skipped utterance is not always left uncovered: the decoder can also write the next
utterance's words over it, or stop a sentence short, and the alignment then stretches a
word over the speech it has no text for ("The cat on" over "These days a chicken leg is
a rare dish", 'on' 2.2 s long). Coverage cannot see that, so a segment with a word that
holds ``stretched_s`` of Silero speech or more is heard again: its stretch of the
recording (pauses kept) is decoded on its own, and when that hears ``MORE_WORDS_HEARD``
words more, as many of them inside the stretched word's time, its segments replace the
first pass's. A segment that follows the one before it without a pause is not heard
again (its stretch would begin inside the words already given). Gap repair's split and
this check read word times: a request without word timestamps gets segment-level
coverage only.

Only for whole files (``WhisperEngine.transcribe``); live streams decode their own way.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from stts.engines.repetition import repeat_start
from stts.engines.whisper_short import squeezed_tail
from stts.engines.whisper_timing import SpeechMap, WordTimer

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# A word's end from the alignment can stretch over a following pause (or a skipped
# utterance): for coverage a word counts for at most this long.
MAX_WORD_S = 1.0
# Keep this much away from the words either side of a gap (their edges, re-heard, would
# come back as a repeated word).
EDGE_S = 0.15
EDGE_TOUCH_S = 0.05
# VAD speech in a gap that runs into an end next to a word, up to ``edge_remnant_s``
# long, is that word's remnant; longer, it is speech the first pass skipped (and spread
# the word over), re-decoded less this much at the word's side.
REMNANT_TRIM_S = 0.3
# Silero, run again inside a gap with short pauses allowed: it must hear this much speech.
MIN_SPEECH_S = 0.5
GAP_VAD = {"min_silence_duration_ms": 300, "speech_pad_ms": 200}
# A re-decoded piece is short and decoded without context: when it loops ("0-0-0-0-…",
# compression ratio 2.0 under the token cap) Whisper's 2.4 misses it. Short pieces of
# real speech stay well below 1.8 (a 10 s sentence ~1.5), so the re-decode retries
# hotter from there, and what still loops is dropped.
REDECODE_COMPRESSION_RATIO = 1.8
LOOP_REPEATS = 5
# A stretched segment heard again replaces the first pass only when the re-decode has at
# least this many more words, and this many inside the stretched words' time (the same
# words again are no reason to change anything).
MORE_WORDS_HEARD = 3
# Longer stretches are not heard again (a segment is at most 30 s of joined speech; with
# the pauses between its chunks put back it can be longer, rarely this long).
MAX_REHEAR_S = 60.0
_TOKEN = re.compile(r"[^\W_]+")


def loops(text: str, repeats: int = LOOP_REPEATS) -> bool:
    """Whether ``text`` repeats a word, or a run of two or three words, ``repeats`` times
    in a row."""
    return repeat_start(_TOKEN.findall(text.lower()), repeats, 1, 3) is not None


@dataclasses.dataclass(slots=True)
class GapRepairStats:
    """What a repairing decode did (for logs and the bench)."""

    gaps: int = 0
    """Uncovered stretches of speech chunks that were long enough to look at."""
    redecoded: int = 0
    """Of them, the ones Silero still heard speech in, decoded again."""
    segments_added: int = 0
    cpu_s: float = 0.0
    """Process time of the gaps' VAD passes and re-decodes (the repair's own cost)."""
    words_moved: int = 0
    """Word starts moved by the word-time repairs (``whisper_timing``)."""
    reheard: int = 0
    """First-pass segments with a stretched word, decoded again on their own."""
    replaced: int = 0
    """Of them, the ones whose re-decode heard more words and replaced them."""


def speech_chunks(audio: np.ndarray, vad_parameters: dict[str, float]) -> list[dict[str, int]]:
    """Silero VAD's speech chunks (sample ranges), as faster-whisper's own filter finds them."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return list(get_speech_timestamps(audio, VadOptions(**vad_parameters)))


def uncovered(
    start: float, end: float, chunks: list[tuple[float, float]], min_gap_s: float
) -> list[tuple[float, float]]:
    """Parts of the speech ``chunks`` (seconds) inside ``(start, end)``, each at least
    ``min_gap_s`` long: speech no word was placed in."""
    out = []
    for lo, hi in chunks:
        a, b = max(lo, start), min(hi, end)
        if b - a >= min_gap_s:
            out.append((a, b))
    return out


def _shifted(segment: Any, offset: float) -> Any:
    """A faster-whisper segment of a cut-out piece, moved to the recording's timeline."""
    words = None
    if segment.words:
        words = [
            dataclasses.replace(w, start=w.start + offset, end=w.end + offset)
            for w in segment.words
        ]
    return dataclasses.replace(
        segment, start=segment.start + offset, end=segment.end + offset, words=words
    )


def without_squeezed_tail(segments: list[Any], language: str | None) -> list[Any]:
    """``segments`` without the words Whisper wrote on after the piece's audio ended (a
    short piece decoded alone, like a live stream's pass, can end in a squeezed copy of
    its last phrase: "0-1-8-0-3, 0-1-8-0-3" with the copy's words lasting no time)."""
    words = [w for s in segments for w in s.words or ()]
    end = squeezed_tail(words, language)
    if end is None:
        return segments
    kept, seen = [], 0
    for segment in segments:
        mine = list(segment.words or ())
        mine = mine[: max(0, end - seen)]
        seen += len(segment.words or ())
        if mine:
            text = "".join(w.word for w in mine)
            kept.append(
                dataclasses.replace(segment, end=mine[-1].end, text=text, words=mine, tokens=[])
            )
    return kept


def _coverage(segment: Any) -> tuple[float, float]:
    """Where a segment's speech starts and (capped per word) ends."""
    if segment.words:
        first, last = segment.words[0], segment.words[-1]
        return float(first.start), float(min(last.end, last.start + MAX_WORD_S))
    return float(segment.start), float(segment.end)


class GapRepairer:
    """One file's decode with gap repair; iterate :meth:`segments` once."""

    def __init__(
        self,
        model: Any,
        audio: np.ndarray,
        vad_parameters: dict[str, float],
        decode_options: dict[str, Any],
        *,
        min_gap_s: float,
        token_cap: Callable[[float], int | None],
        word_times: bool = False,
        late_onsets: bool = True,
        edge_remnant_s: float | None = 0.6,
        stretched_s: float | None = 1.1,
    ) -> None:
        self.model = model
        self.audio = audio
        self.vad_parameters = vad_parameters
        self.options = decode_options
        self.min_gap_s = min_gap_s
        self.edge_remnant_s = edge_remnant_s
        self.stretched_s = stretched_s
        self.token_cap = token_cap
        self.stats = GapRepairStats()
        self.info: Any = None
        # Silero runs once: the chunks and the word-time repairs read the same map.
        speech = self._speech = SpeechMap(audio, vad_parameters["threshold"])
        self._chunks = speech.chunks(
            vad_parameters["min_silence_duration_ms"], vad_parameters["speech_pad_ms"]
        )
        self._spans = [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in self._chunks]
        self.timer = (
            WordTimer(speech, self._chunks, late_onsets=late_onsets) if word_times else None
        )

    def segments(self) -> Iterator[Any]:
        """faster-whisper segments in time order, first pass and repairs together."""
        from faster_whisper.transcribe import restore_speech_timestamps
        from faster_whisper.vad import collect_chunks

        if not self._chunks:
            return
        # What faster-whisper's transcribe(vad_filter=True) does, from our chunks.
        pieces, _meta = collect_chunks(self.audio, self._chunks)
        joined = np.concatenate(pieces)
        first_pass, self.info = self.model.transcribe(joined, vad_filter=False, **self.options)
        # A short piece must not detect a language of its own.
        self.options = {**self.options, "language": self.info.language}
        covered_to = 0.0
        prompt = self.options.get("initial_prompt") or ""
        for whole in restore_speech_timestamps(first_pass, self._chunks, SAMPLE_RATE):
            # A skipped utterance can also lie between two words of one segment.
            for segment in self._split(whole):
                parts = self._reheard(segment, covered_to, prompt) or [segment]
                start = _coverage(parts[0])[0]
                yield from map(self._settled, self._repair(covered_to, start, prompt))
                for part in parts:
                    yield self._settled(part)
                    prompt = part.text
                    covered_to = max(covered_to, _coverage(part)[1])
        tail = self._repair(covered_to, len(self.audio) / SAMPLE_RATE, prompt)
        yield from map(self._settled, tail)

    def _settled(self, segment: Any) -> Any:
        """``segment`` with its word times out of non-speech (when asked for); what the
        repair looks at (coverage, gaps) is read from the times as decoded."""
        if self.timer is None:
            return segment
        settled = self.timer.settle(segment)
        self.stats.words_moved = self.timer.moved
        return settled

    def _split(self, segment: Any) -> list[Any]:
        """``segment`` cut where an uncovered stretch of speech lies between two of its
        words (each part a segment of its own; ``_repair`` then looks at the stretch)."""
        words = segment.words or []
        cuts = [
            k
            for k in range(1, len(words))
            if uncovered(
                min(words[k - 1].end, words[k - 1].start + MAX_WORD_S),
                words[k].start,
                self._spans,
                self.min_gap_s,
            )
        ]
        if not cuts:
            return [segment]
        parts = []
        for a, b in zip([0, *cuts], [*cuts, len(words)], strict=True):
            mine = words[a:b]
            parts.append(
                dataclasses.replace(
                    segment,
                    start=mine[0].start,
                    end=mine[-1].end,
                    text="".join(w.word for w in mine),
                    words=mine,
                    tokens=segment.tokens if a == 0 else [],
                )
            )
        return parts

    def _repair(self, start: float, end: float, prompt: str) -> Iterator[Any]:
        """Re-decode the speech no word covered between ``start`` and ``end``."""
        for lo, hi in uncovered(start, end, self._spans, self.min_gap_s):
            self.stats.gaps += 1
            # Which ends touch a word (the others are a VAD chunk's edge, with its pad).
            after_word, before_word = lo <= start, hi >= end
            lo = lo + (EDGE_S if after_word else 0.0)
            hi = hi - (EDGE_S if before_word else 0.0)
            cpu = time.process_time()
            found = self._redecode(lo, hi, prompt, (after_word, before_word))
            self.stats.cpu_s += time.process_time() - cpu
            for segment in found:
                text = segment.text.strip()
                # Whisper sometimes answers a hard piece with its prompt: not new speech.
                if not text or (prompt and text in prompt) or loops(text):
                    logger.debug("gap %.2f-%.2f s: %r dropped", lo, hi, text)
                    continue
                self.stats.segments_added += 1
                logger.debug(
                    "gap %.2f-%.2f s re-decoded: %.2f-%.2f %r",
                    *(lo, hi, segment.start, segment.end, text),
                )
                yield segment
                prompt = text

    def _redecode(
        self, lo: float, hi: float, prompt: str, word_ends: tuple[bool, bool]
    ) -> list[Any]:
        """The segments of ``lo``-``hi`` (s) decoded alone, on the recording's timeline;
        none when Silero hears too little speech there."""
        piece = self.audio[int(lo * SAMPLE_RATE) : int(hi * SAMPLE_RATE)]
        inner = self._not_remnants(
            speech_chunks(piece, {**self.vad_parameters, **GAP_VAD}), len(piece), word_ends
        )
        heard = sum(c["end"] - c["start"] for c in inner) / SAMPLE_RATE
        if heard < MIN_SPEECH_S:
            logger.debug("gap %.2f-%.2f s: %.2f s of speech, left", lo, hi, heard)
            return []
        a, b = inner[0]["start"], inner[-1]["end"]
        self.stats.redecoded += 1
        return self._decode(lo + a / SAMPLE_RATE, lo + b / SAMPLE_RATE, prompt)

    def _decode(self, lo: float, hi: float, prompt: str) -> list[Any]:
        """The segments of ``lo``-``hi`` (s) decoded alone, on the recording's timeline."""
        options = {
            **self.options,
            "initial_prompt": prompt or None,
            "max_new_tokens": self.token_cap(hi - lo),
            "compression_ratio_threshold": min(
                self.options.get("compression_ratio_threshold") or REDECODE_COMPRESSION_RATIO,
                REDECODE_COMPRESSION_RATIO,
            ),
        }
        piece = self.audio[int(lo * SAMPLE_RATE) : int(hi * SAMPLE_RATE)]
        found, _info = self.model.transcribe(piece, vad_filter=False, **options)
        shifted = [_shifted(segment, lo) for segment in found]
        return without_squeezed_tail(shifted, options.get("language"))

    def _chunk_of(self, at: float) -> tuple[float, float]:
        """The speech chunk (s) that holds ``at``, or ``at`` itself when none does."""
        for lo, hi in self._spans:
            if lo <= at <= hi:
                return lo, hi
        return at, at

    def _reheard(self, segment: Any, covered_to: float, prompt: str) -> list[Any] | None:
        """The segments that replace a first-pass ``segment`` with a stretched word: its
        stretch of the recording decoded again on its own, when that has
        ``MORE_WORDS_HEARD`` words more than the segment and at least as many inside the
        stretched words' time (speech the first pass had no text for); None to keep the
        segment. Only a segment that begins after what earlier segments cover (a pause
        or a chunk's start before it) is heard again."""
        words = segment.words or []
        stretched = [
            (w.start, w.end)
            for w in words
            if self.stretched_s is not None
            and self._speech.speech_s(w.start, w.end) >= self.stretched_s
        ]
        if not stretched:
            return None
        # From the start of the first word's chunk (the skipped speech can lie before the
        # words written over it), never into what earlier segments hold, to just after
        # the last word, within the last chunk that begins before its end (a stretched
        # last word runs over the pause; a word mapped across a join starts before its
        # chunk).
        lo = self._chunk_of(words[0].start)[0]
        if covered_to > 0:
            lo = max(lo, covered_to + EDGE_S)
        last = words[-1]
        ends = [b for a, b in self._spans if a < last.end]
        hi = min(last.end + EDGE_S, max(ends, default=last.end + EDGE_S))
        if lo > words[0].start or not 0 < hi - lo <= MAX_REHEAR_S:
            return None
        self.stats.reheard += 1
        cpu = time.process_time()
        found = [
            s
            for s in self._decode(lo, hi, prompt)
            if s.text.strip()
            and not loops(s.text)
            # Whisper answering with its prompt, unless the segment itself said it.
            and not (prompt and s.text.strip() in prompt and s.text.strip() not in segment.text)
        ]
        self.stats.cpu_s += time.process_time() - cpu
        heard = [w for s in found for w in s.words or ()]
        inside = sum(1 for w in heard if any(a <= (w.start + w.end) / 2 <= b for a, b in stretched))
        logger.debug(
            "stretched %.2f-%.2f s heard again: %r -> %r (%d words inside the stretch)",
            *(lo, hi, segment.text, " ".join(s.text.strip() for s in found), inside),
        )
        if len(heard) < len(words) + MORE_WORDS_HEARD or inside < MORE_WORDS_HEARD:
            return None
        self.stats.replaced += 1
        return found

    def _not_remnants(
        self, chunks: list[dict[str, int]], length: int, word_ends: tuple[bool, bool]
    ) -> list[dict[str, int]]:
        """The VAD ``chunks`` of a gap's ``length`` samples that are not a neighbouring
        word's remnant. Speech running into an end next to a word is that word's remnant
        (decoded again it comes back as a repeat of the text around it), unless it is
        longer than ``edge_remnant_s``: then the first pass skipped speech there and
        stretched the word over it (two consecutive copies of one sentence, measured),
        and it is kept less ``REMNANT_TRIM_S`` at the word's side."""
        edge = int(EDGE_TOUCH_S * SAMPLE_RATE)
        trim = int(REMNANT_TRIM_S * SAMPLE_RATE)
        longest = None if self.edge_remnant_s is None else self.edge_remnant_s * SAMPLE_RATE
        kept = []
        for c in chunks:
            start, end = c["start"], c["end"]
            touches = (word_ends[0] and start <= edge, word_ends[1] and end >= length - edge)
            if any(touches):
                if longest is None or end - start <= longest:
                    continue
                start, end = start + trim * touches[0], end - trim * touches[1]
                if end <= start:
                    continue
            kept.append({"start": start, "end": end})
        return kept
