"""Word times out of non-speech, from Silero VAD (issue 14).

Whisper's word times come from cross-attention alignment (DTW), and the first word after
a pause is often placed early: it starts in the pause, 0.5-1 s before the speech. With
``vad_filter`` faster-whisper decodes the speech chunks joined end to end, where two
chunks' pads leave only 0.8 s of pause between utterances, and maps each word back by
the chunk its middle falls in: a first word pulled early across the join lands in the
previous chunk, seconds before its speech (the pause that was cut out). Measured on the
10-minute long-form recording of ``bench/robustness.py``: all 15 first words off by more
than 0.5 s were early: 9 starting in the pause, 4 carried into the previous chunk, one
over the previous utterance's tail in one chunk, one a recognition error.

Repairs of the times, never of the words (a segment's first word "has no onset of its
own" when Silero hears no speech begin between the previous word's end and its end):

- **Back to its chunk**: a segment's first word mapped into an earlier VAD chunk than the
  segment's next word, with no speech onset of its own there (its speech is the previous
  word's), is moved by the pause cut out between the two chunks (and, left wholly in
  the pause, placed as in the next rule).
- **Not in the previous word's speech**: a segment's first word with no speech onset of
  its own that ends before its speech begins (aligned over the previous utterance's tail
  and the pause, within one chunk) and the next word share the time from that onset to
  the next word's end, in proportion to their aligned lengths.
- **Out of non-speech** (stable-ts's ``suppress_silence`` on Silero VAD): a word that
  starts in non-speech moves its start to where speech begins, if that is before its end
  (a word keeps at least ``MIN_WORD_S``).

A first word that ends a sentence ("clubs.") is never carried forward: there Whisper
opened the segment a word early and the word belongs before the pause.

Non-speech is Silero's probability below faster-whisper's ``neg_threshold`` (the VAD
threshold - 0.15, stable-ts's 0.35 at the default 0.5). The probabilities are the ones
the speech chunks are cut from (:class:`SpeechMap`): Silero runs once per file.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000
WINDOW = 512
"""Samples per Silero frame (32 ms at 16 kHz), as faster-whisper runs it."""
SENTENCE_ENDS = (".", "?", "!")
CLAUSE_ENDS = (*SENTENCE_ENDS, ",", ";", ":")
MIN_WORD_S = 0.1
"""A word moved out of non-speech keeps at least this long (stable-ts's default)."""
MIN_PAUSE_S = 0.3
"""A pause inside a word that starts in the previous word's speech: at least this much
non-speech before the onset the word moves to."""


class SpeechMap:
    """Silero VAD's speech probability per 32 ms frame of one file, computed once: the
    speech chunks faster-whisper's VAD filter would cut, and where speech is."""

    def __init__(self, audio: np.ndarray, threshold: float = 0.5) -> None:
        from faster_whisper.vad import get_vad_model

        self.samples = len(audio)
        self.threshold = threshold
        padded = np.pad(audio, (0, WINDOW - len(audio) % WINDOW))
        self.probs = np.asarray(get_vad_model()(padded), dtype=np.float32).ravel()
        # faster-whisper's neg_threshold: below it a frame is always silence.
        self.speech = self.probs >= max(threshold - 0.15, 0.01)

    def chunks(self, min_silence_duration_ms: float, speech_pad_ms: float) -> list[dict[str, int]]:
        """faster-whisper's ``get_speech_timestamps`` on these probabilities (its defaults
        for what stts does not set: no minimum speech, no maximum chunk length)."""
        threshold = self.threshold
        negative = max(threshold - 0.15, 0.01)
        min_silence = SAMPLE_RATE * min_silence_duration_ms / 1000
        pad = SAMPLE_RATE * speech_pad_ms / 1000
        speeches: list[dict[str, int]] = []
        start: int | None = None
        silent_from = 0
        for i, prob in enumerate(self.probs.tolist()):
            at = WINDOW * i
            if prob >= threshold and silent_from:
                silent_from = 0
            if prob >= threshold and start is None:
                start = at
                continue
            if prob < negative and start is not None:
                if not silent_from:
                    silent_from = at
                if at - silent_from < min_silence:
                    continue
                if silent_from - start > 0:
                    speeches.append({"start": start, "end": silent_from})
                start, silent_from = None, 0
        if start is not None and self.samples - start > 0:
            speeches.append({"start": start, "end": self.samples})
        for i, speech in enumerate(speeches):
            if i == 0:
                speech["start"] = int(max(0, speech["start"] - pad))
            if i != len(speeches) - 1:
                silence = speeches[i + 1]["start"] - speech["end"]
                if silence < 2 * pad:
                    speech["end"] += int(silence // 2)
                    speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - silence // 2))
                else:
                    speech["end"] = int(min(self.samples, speech["end"] + pad))
                    speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - pad))
            else:
                speech["end"] = int(min(self.samples, speech["end"] + pad))
        return speeches

    def _frames(self, start: float, end: float) -> tuple[int, int]:
        lo = min(max(int(start * SAMPLE_RATE) // WINDOW, 0), len(self.speech))
        hi = min(max(int(np.ceil(end * SAMPLE_RATE / WINDOW)), lo), len(self.speech))
        return lo, hi

    def is_speech(self, at: float) -> bool:
        """Whether the frame at ``at`` (s) is speech."""
        lo, _hi = self._frames(at, at)
        return bool(self.speech[min(lo, len(self.speech) - 1)])

    def speech_from(self, start: float, end: float) -> float | None:
        """Where the first speech frame in ``start``-``end`` (s) begins, or None."""
        lo, hi = self._frames(start, end)
        found = np.flatnonzero(self.speech[lo:hi])
        return None if not len(found) else float((lo + found[0]) * WINDOW / SAMPLE_RATE)

    def next_onset(self, start: float, end: float) -> float | None:
        """Where speech next begins (a non-speech frame, then a speech frame) in
        ``start``-``end`` (s), or None."""
        lo, hi = self._frames(start, end)
        lo = max(lo, 1)
        if hi <= lo:
            return None
        found = np.flatnonzero(self.speech[lo:hi] & ~self.speech[lo - 1 : hi - 1])
        return None if not len(found) else float((lo + found[0]) * WINDOW / SAMPLE_RATE)

    def last_onset(self, start: float, end: float, pause_s: float) -> float | None:
        """Where speech last begins in ``start``-``end`` (s) after at least ``pause_s``
        of non-speech, or None."""
        lo, hi = self._frames(start, end)
        pause = max(1, int(np.ceil(pause_s * SAMPLE_RATE / WINDOW)))
        lo = max(lo, pause)
        if hi <= lo:
            return None
        # Speech frames among the ``pause`` frames before each frame from ``lo`` on.
        counts = np.concatenate(([0], np.cumsum(self.speech[lo - pause : hi])))
        before = counts[pause:-1] - counts[: -pause - 1]
        hits = np.flatnonzero(self.speech[lo:hi] & (before == 0))
        return None if not len(hits) else float((lo + hits[-1]) * WINDOW / SAMPLE_RATE)

    def onset_in(self, start: float, end: float) -> bool:
        """Whether speech begins (a non-speech frame, then a speech frame) in
        ``start``-``end`` (s)."""
        lo, hi = self._frames(start, end)
        lo = max(lo, 1)
        if hi <= lo:
            return False
        return bool(np.any(self.speech[lo:hi] & ~self.speech[lo - 1 : hi - 1]))


class WordTimer:
    """The two repairs of one file's word times (see the module's doc), segment by
    segment in time order, on the recording's timeline."""

    def __init__(
        self,
        speech: SpeechMap,
        chunks: list[dict[str, int]],
        *,
        late_onsets: bool = True,
        carry_inside: bool = True,
    ) -> None:
        self.speech = speech
        self.late_onsets = late_onsets
        self.carry_inside = carry_inside
        self._ends = [c["end"] / SAMPLE_RATE for c in chunks]
        cut, previous = 0, 0
        self._cut_before = []
        for c in chunks:
            cut += c["start"] - previous
            previous = c["end"]
            self._cut_before.append(cut / SAMPLE_RATE)
        self._last_end: float | None = None
        self.moved = 0
        """Words whose start was moved (for logs and the bench)."""

    def _chunk(self, start: float, end: float) -> int:
        return min(bisect.bisect_left(self._ends, (start + end) / 2), len(self._ends) - 1)

    def settle(self, segment: Any) -> Any:
        """``segment`` (faster-whisper's) with its words' times repaired."""
        words = list(segment.words or ())
        if not words:
            return segment
        first = words[0]
        if len(words) > 1 and self._ends and self._last_end is not None:
            after = words[1]
            here, there = self._chunk(first.start, first.end), self._chunk(after.start, after.end)
            # No speech onset of its own: its speech, if any, is the previous word's;
            # unless it ends a sentence (Whisper opened the segment a word early).
            borrowed = not self.speech.onset_in(self._last_end, first.end) and not (
                first.word.strip().endswith(SENTENCE_ENDS)
            )
            if borrowed and there > here:
                # Back by the pause cut out between the chunks.
                shift = self._cut_before[there] - self._cut_before[here]
                end = round(min(first.end + shift, after.start), 3)
                start = round(min(first.start + shift, end - MIN_WORD_S), 3)
                words[0] = first = dataclasses.replace(first, start=start, end=end)
                self.moved += 1
            if (
                borrowed
                and there >= here
                and (there == here or not self.speech.is_speech(first.start))
                and not self.speech.onset_in(first.start, first.end)
            ):
                # Still before its speech: it and the next word share the time from
                # where that speech begins to the next word's end.
                shared = self._share(first, after)
                if shared is not None:
                    (words[0], words[1]), first = shared, shared[0]
                    self.moved += 1
        if self.carry_inside and self._ends:
            for k in range(1, len(words) - 1):
                words[k : k + 2] = self._back_to_its_chunk(words[k - 1], *words[k : k + 2])
        for k, word in enumerate(words):
            if word.end - word.start <= MIN_WORD_S:
                continue
            if self.speech.is_speech(word.start):
                before = words[k - 1].end if k else self._last_end
                if self.late_onsets and before is not None:
                    words[k] = self._from_late_onset(word, before)
                continue
            begins = self.speech.speech_from(word.start, word.end)
            if begins is None:
                continue
            start = min(max(begins, word.start), round(word.end - MIN_WORD_S, 3))
            if start > word.start:
                words[k] = dataclasses.replace(word, start=start)
                self.moved += 1
        self._last_end = words[-1].end
        return dataclasses.replace(segment, start=words[0].start, end=words[-1].end, words=words)

    def _back_to_its_chunk(self, previous: Any, word: Any, after: Any) -> list[Any]:
        """A word inside a segment that straddled a join of two chunks as decoded (its
        end lies past its chunk's end, in the cut-out pause) with the next word in a
        later chunk and no onset of its own: the next utterance's first word pulled
        early across the join and mapped by its middle. It moves by the cut-out pause
        (then, starting in non-speech, to where its speech begins). A word that ends a
        clause keeps its place (the previous utterance's last word, run on)."""
        here, there = self._chunk(word.start, word.end), self._chunk(after.start, after.end)
        if (
            there <= here
            or word.end <= self._ends[here]
            or word.word.strip().endswith(CLAUSE_ENDS)
            or self.speech.onset_in(previous.end, word.end)
        ):
            return [word, after]
        shift = self._cut_before[there] - self._cut_before[here]
        end = round(min(word.end + shift, after.start), 3)
        start = round(min(word.start + shift, end - MIN_WORD_S), 3)
        self.moved += 1
        word = dataclasses.replace(word, start=start, end=end)
        if self.speech.speech_from(start, end) is None:
            # Wholly before its speech still: as a segment's first word, it shares.
            return list(self._share(word, after) or (word, after))
        return [word, after]

    def _share(self, first: Any, after: Any) -> tuple[Any, Any] | None:
        """``first``, which ends before its speech begins, and the next word ``after``
        sharing the time from that onset to ``after``'s end in proportion to their
        aligned lengths; None when there is no room for both."""
        onset = self.speech.next_onset(first.end, after.end)
        room = after.end - (onset or after.end)
        if onset is None or room < 2 * MIN_WORD_S:
            return None
        mine = first.end - first.start
        share = mine / (mine + after.end - after.start) * room
        cut = round(onset + min(max(share, MIN_WORD_S), room - MIN_WORD_S), 3)
        return (
            dataclasses.replace(first, start=round(onset, 3), end=cut),
            dataclasses.replace(after, start=max(after.start, cut)),
        )

    def _from_late_onset(self, word: Any, before: float) -> Any:
        """``word``, which starts in speech, moved to the last onset after a pause inside
        it when its start is the previous word's speech (no onset since ``before``, the
        previous word's end): Whisper stretched it back over that word's tail and the
        pause. A word that ends a sentence keeps its start (its end ran on, not its
        start back)."""
        if word.word.strip().endswith(SENTENCE_ENDS) or self.speech.onset_in(before, word.start):
            return word
        onset = self.speech.last_onset(word.start, word.end, MIN_PAUSE_S)
        if onset is None:
            return word
        start = round(min(onset, word.end - MIN_WORD_S), 3)
        if start <= word.start:
            return word
        self.moved += 1
        return dataclasses.replace(word, start=start)
