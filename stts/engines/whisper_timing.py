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
- **Shared over more words**: where the next word holds too little of that speech
  (under ``MIN_WORD_S`` each), the word shares it with up to ``SHARE_REACH`` words on;
  a word that starts less than ``MIN_LEAD_S`` before its speech is left alone.
- **Unheard**: any word but a segment's last that holds no speech frame at all and does
  not end a clause shares its speech with the words after it the same way (a pause or
  an untranscribed utterance between it and the previous word hides the borrowing).
- **Out of non-speech** (stable-ts's ``suppress_silence`` on Silero VAD): a word that
  starts in non-speech moves its start to where speech begins, if that is before its end
  (a word keeps at least ``MIN_WORD_S``).

A first word that ends a sentence ("clubs.") is never carried forward: there Whisper
opened the segment a word early and the word belongs before the pause.

Non-speech is Silero's probability below faster-whisper's ``neg_threshold`` (the VAD
threshold - 0.15, stable-ts's 0.35 at the default 0.5). The probabilities are the ones
the speech chunks are cut from (:class:`SpeechMap`): Silero runs once per file. A dip of
one frame (``BRIDGE_FRAMES``) between speech frames counts as speech: no pause, so no
onset that would give a word aligned over another utterance's tail speech of its own.
"""

from __future__ import annotations

import bisect
import copy
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
BRIDGE_FRAMES = 1
"""Non-speech dips of up to this many Silero frames (32 ms each) between speech frames
count as speech: Silero flickers inside words, and such a dip is no pause."""
MIN_LEAD_S = 0.5
"""A word shares its speech only when that speech begins at least this long after the
word starts: Silero's onset under noise can lag a soft start (a fricative) by 0.2-0.4 s,
so a word closer to it than that may well be right."""
SHARE_REACH = 3
"""A word before its speech shares that speech with at most this many words after it."""
MIN_PAUSE_S = 0.3
"""A pause inside a word that starts in the previous word's speech, or before the onset
a word shares: at least this much non-speech before the onset the word moves to."""


class SpeechMap:
    """Silero VAD's speech probability per 32 ms frame of one file, computed once: the
    speech chunks faster-whisper's VAD filter would cut, and where speech is."""

    def __init__(
        self, audio: np.ndarray, threshold: float = 0.5, bridge_frames: int = BRIDGE_FRAMES
    ) -> None:
        from faster_whisper.vad import get_vad_model

        self.samples = len(audio)
        self.threshold = threshold
        padded = np.pad(audio, (0, WINDOW - len(audio) % WINDOW))
        self.probs = np.asarray(get_vad_model()(padded), dtype=np.float32).ravel()
        self.speech = self._speech(bridge_frames)

    def _speech(self, bridge_frames: int) -> np.ndarray:
        """Speech per frame: at or above faster-whisper's ``neg_threshold`` (below it a
        frame is always silence), with dips of up to ``bridge_frames`` non-speech frames
        between two speech frames bridged (no pause, so no onset after them)."""
        speech = self.probs >= max(self.threshold - 0.15, 0.01)
        for width in range(1, bridge_frames + 1):
            for offset in range(width):
                # Frames ``i`` with speech at i - 1 - offset and at i - offset + width.
                left = np.zeros_like(speech)
                right = np.zeros_like(speech)
                left[1 + offset :] = speech[: len(speech) - 1 - offset]
                shift = width - offset
                right[: len(speech) - shift] = speech[shift:]
                speech = speech | (left & right)
        return speech

    def bridged(self, bridge_frames: int) -> SpeechMap:
        """This map with dips of up to ``bridge_frames`` bridged instead (the bench's
        replay compares rule sets without running Silero again)."""
        other = copy.copy(self)
        other.speech = self._speech(bridge_frames)
        return other

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

    def speech_s(self, start: float, end: float) -> float:
        """How much of ``start``-``end`` (s) is speech."""
        lo, hi = self._frames(start, end)
        return float(np.count_nonzero(self.speech[lo:hi])) * WINDOW / SAMPLE_RATE

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
        share_unheard: bool = True,
        share_reach: int = SHARE_REACH,
        min_lead_s: float = MIN_LEAD_S,
        min_pause_s: float = MIN_PAUSE_S,
    ) -> None:
        self.min_lead_s = min_lead_s
        self.min_pause_s = min_pause_s
        self.speech = speech
        self.share_unheard = share_unheard
        self.share_reach = share_reach
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
                shared = self._share(words, 0)
                if shared is not None:
                    words, first = shared, shared[0]
                    self.moved += 1
        if self.carry_inside and self._ends:
            for k in range(1, len(words) - 1):
                words = self._back_to_its_chunk(words, k)
        if self.share_unheard:
            for k in range(len(words) - 1):
                words = self._unheard(words, k)
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

    def _back_to_its_chunk(self, words: list[Any], k: int) -> list[Any]:
        """A word inside a segment that straddled a join of two chunks as decoded (its
        end lies past its chunk's end, in the cut-out pause) with the next word in a
        later chunk and no onset of its own: the next utterance's first word pulled
        early across the join and mapped by its middle. It moves by the cut-out pause
        (then, starting in non-speech, to where its speech begins). A word that ends a
        clause keeps its place (the previous utterance's last word, run on)."""
        previous, word, after = words[k - 1 : k + 2]
        here, there = self._chunk(word.start, word.end), self._chunk(after.start, after.end)
        if (
            there <= here
            or word.end <= self._ends[here]
            or word.word.strip().endswith(CLAUSE_ENDS)
            or self.speech.onset_in(previous.end, word.end)
        ):
            return words
        shift = self._cut_before[there] - self._cut_before[here]
        end = round(min(word.end + shift, after.start), 3)
        start = round(min(word.start + shift, end - MIN_WORD_S), 3)
        self.moved += 1
        words = [*words[:k], dataclasses.replace(word, start=start, end=end), *words[k + 1 :]]
        if self.speech.speech_from(start, end) is None:
            # Wholly before its speech still: as a segment's first word, it shares.
            return self._share(words, k) or words
        return words

    def _unheard(self, words: list[Any], k: int) -> list[Any]:
        """``words`` with ``words[k]`` shared as in :meth:`_share` when it holds no
        speech at all (Whisper pulled it into a pause, or a VAD chunk's pad, ahead of
        its speech) and does not end a clause (a clause's last word run on into the
        pause stays)."""
        word = words[k]
        if word.word.strip().endswith(CLAUSE_ENDS) or (
            self.speech.speech_from(word.start, word.end) is not None
        ):
            return words
        shared = self._share(words, k)
        if shared is None:
            return words
        self.moved += 1
        return shared

    def _share(self, words: list[Any], k: int) -> list[Any] | None:
        """``words`` with ``words[k]``, which ends before its speech begins (an onset
        by the end of the next word, at least ``min_lead_s`` after its start, after a
        pause of at least ``min_pause_s``: not a dip inside its own speech), and the
        words after it sharing the time from that onset to the end of the nearest word
        that leaves each of them ``MIN_WORD_S`` (at most ``share_reach`` words on), in
        proportion to their aligned lengths; None when there is no such onset or
        word."""
        first = words[k]
        onset = self.speech.next_onset(first.end, words[k + 1].end)
        if (
            onset is None
            or onset - first.start < self.min_lead_s
            or self.speech.speech_from(onset - self.min_pause_s, onset) is not None
        ):
            return None
        for m in range(k + 1, min(len(words), k + 1 + self.share_reach)):
            last = words[m]
            if last.end - onset < (m - k + 1) * MIN_WORD_S:
                continue
            lengths = [w.end - w.start for w in words[k : m + 1]]
            total, room, cut = sum(lengths), last.end - onset, onset
            shared = []
            for j, length in enumerate(lengths[:-1]):
                left = room - (cut - onset)
                share = length / total * room if total > 0 else MIN_WORD_S
                end = round(
                    cut + min(max(share, MIN_WORD_S), left - (len(lengths) - 1 - j) * MIN_WORD_S), 3
                )
                shared.append(dataclasses.replace(words[k + j], start=round(cut, 3), end=end))
                cut = end
            shared.append(dataclasses.replace(last, start=max(last.start, cut)))
            return [*words[:k], *shared, *words[m + 1 :]]
        return None

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
