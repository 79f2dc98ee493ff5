"""Whisper as a live stream: LocalAgreement-2 over re-decoded audio (whisper_streaming).

Whisper decodes whole windows, so a stream keeps the audio not yet confirmed in a
buffer and, each time at least ``min_chunk_s`` of new audio has arrived, decodes that
buffer again with word timestamps. The longest prefix on which this hypothesis and the
previous one agree is committed (:class:`~stts.engines.streaming.LocalAgreement`), the
committed text that has left the buffer is the prompt of the next pass, and the buffer
is cut in a pause between committed words once it passes ``trim_s``, so it never grows
without bound. A pass whose words leave a second or more of loud audio after them
stopped short and confirms nothing.

By default (``whisper.stream_short_context``) a pass runs the encoder on the buffer
only (:mod:`~stts.engines.whisper_short`), every 1 s of new audio (every 0.5 s until
the first commit, ``whisper.stream_early_passes``, and after a pass that heard
nothing), with the buffer cut at 5 s: the cost of a pass follows the buffer. The 30
s-window path decodes every 2 s and cuts at 10 s.

Interim passes are cheap and deterministic: temperature 0 without fallback (a pass on a
few hundred milliseconds with fallback took ~8 s in WhisperLiveKit's traces), no
conditioning on Whisper's own previous text, and never on less than a quarter second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from stts.audio import SAMPLE_RATE, is_silent
from stts.engines.base import TranscribeOptions
from stts.engines.streaming import EngineStream, LocalAgreement, StreamUpdate
from stts.engines.whisper_short import ShortContextDecoder, unheard_speech_s
from stts.transcript import Transcript, Word

if TYPE_CHECKING:
    from stts.audio import AudioArray

PROMPT_CHARS = 200
"""How much of the committed text is passed to the next pass as its prompt."""


HEARD_NOTHING_KEEP_S = 1.5
"""After a pass that heard no words, the buffer keeps this much of its end (a word may
be starting there)."""


CUT_SEARCH_WORDS = 6
"""How far back (in committed words) a pause to cut the buffer in is looked for."""
CUT_PAUSE_S = 0.1
"""A gap between two words this long is a pause the buffer may be cut in."""

STOPPED_SHORT_S = 1.0
"""An interim pass whose words leave this much loud audio uncovered before the buffer
end stopped short ("J J" for a whole sentence): it is shown, and confirms nothing."""


class WhisperStream(EngineStream):
    """One live utterance on a loaded faster-whisper model (shared, thread-safe)."""

    def __init__(
        self,
        model: Any,
        options: TranscribeOptions,
        *,
        model_name: str,
        multilingual: bool,
        beam_size: int,
        interim_beam_size: int = 1,
        min_chunk_s: float | None = None,
        trim_s: float | None = None,
        max_buffer_s: float = 28.0,
        short_context: bool = False,
        early_passes: bool = False,
    ) -> None:
        self._model = model
        # Short context: the encoder runs on the buffer (plus a little silence), not on a
        # 30 s window (whisper_short); off: faster-whisper's transcribe, padded to 30 s.
        self._short = ShortContextDecoder(model) if short_context else None
        self.options = options
        self.model_name = model_name
        self.language = options.language if multilingual else "en"
        self.task = options.task if multilingual else "transcribe"
        self.beam_size = beam_size
        self.interim_beam_size = min(beam_size, interim_beam_size)
        if min_chunk_s is None:
            # A short-context pass costs about a third of a windowed one: twice as often.
            min_chunk_s = 1.0 if short_context else 2.0
        self.min_chunk = int(min_chunk_s * SAMPLE_RATE)
        self.early_passes = early_passes
        if trim_s is None:
            # A short-context pass costs what its buffer holds: keep the buffer short.
            trim_s = 5.0 if short_context else 10.0
        self.trim = int(trim_s * SAMPLE_RATE)
        self.max_buffer = int(max_buffer_s * SAMPLE_RATE)
        self.agreement = LocalAgreement()
        self.buffer = np.zeros(0, np.float32)
        self.offset = 0.0  # stream time (s) of buffer[0]
        self.total = 0  # samples accepted
        self.unseen = 0  # samples accepted since the last pass
        self.passes = 0
        self.fallbacks = 0  # short passes decoded again on a longer context, or loop-cut
        self.stopped_short = 0  # interim passes that confirmed nothing (STOPPED_SHORT_S)
        self.heard_nothing = False  # the last pass heard no words

    @property
    def short_context(self) -> bool:
        """Whether passes run the encoder on the buffer only (whisper_short)."""
        return self._short is not None

    def _decode(self, final: bool) -> list[Word]:
        if len(self.buffer) < SAMPLE_RATE // 4 or is_silent(self.buffer):
            return []
        # The prompt is the committed text the buffer no longer holds: words still in the
        # buffer are decoded again and matched, a prompt repeating them makes Whisper
        # skip them with stretched timestamps.
        gone = "".join(w.word for w in self.agreement.committed if w.end <= self.offset)
        prompt = (self.options.initial_prompt or "") + " " + gone.strip()
        # Speech runs at ~3 tokens a second: a pass that writes far more is looping.
        max_new_tokens = min(440, 20 + int(8 * len(self.buffer) / SAMPLE_RATE))
        if self._short is not None:
            return self._decode_short(final, prompt.strip()[-PROMPT_CHARS:], max_new_tokens)
        segments, info = self._model.transcribe(
            self.buffer,
            language=self.language,
            task=self.task,
            beam_size=self.beam_size if final else self.interim_beam_size,
            # Interim passes: one temperature, no fallback. The last pass may retry.
            temperature=(0.0, 0.2, 0.4) if final else 0.0,
            initial_prompt=prompt.strip()[-PROMPT_CHARS:] or None,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
            max_new_tokens=max_new_tokens,
        )
        words = [
            Word(
                round(self.offset + w.start, 3),
                round(self.offset + w.end, 3),
                w.word,
                round(float(w.probability), 4),
            )
            for segment in segments
            for w in segment.words or ()
        ]
        self.passes += 1
        if self.language is None and len(self.buffer) >= 2 * SAMPLE_RATE:
            self.language = info.language  # fixed once heard well enough: no flip-flopping
        return words

    def _decode_short(self, final: bool, prompt: str, max_new_tokens: int) -> list[Word]:
        assert self._short is not None
        result = self._short.decode(
            self.buffer,
            language=self.language,
            task=self.task,
            prompt=prompt or None,
            beam_size=self.beam_size if final else self.interim_beam_size,
            temperatures=(0.0, 0.2, 0.4) if final else (0.0,),
            max_new_tokens=max_new_tokens,
            check_end=final,
            window_fallback=final,
        )
        self.passes += 1
        self.fallbacks += result.fell_back is not None
        if self.language is None and len(self.buffer) >= 2 * SAMPLE_RATE:
            self.language = result.language
        return [
            Word(
                round(self.offset + w.start, 3),
                round(self.offset + w.end, 3),
                w.word,
                w.probability,
            )
            for w in result.words
        ]

    def _cut_point(self) -> float:
        """Where the buffer may be cut: in the last pause between committed words (of the
        last ``CUT_SEARCH_WORDS``), else before the last committed word.

        Cut at a word's end, the buffer may begin with that word's last sound, which the
        next pass writes as a word of its own ("represented it in"); a cut in a pause
        leaves none, and a committed word kept in the buffer is matched and dropped.
        """
        committed = self.agreement.committed[-(CUT_SEARCH_WORDS + 1) :]
        following = committed[1:] + self.agreement.previous[:1]
        candidates = list(zip(committed, following, strict=False))[-CUT_SEARCH_WORDS:]
        for k in range(len(candidates) - 1, -1, -1):
            word, after = candidates[k]
            if word.end <= self.offset:
                break
            gap = after.start - word.end
            if gap >= CUT_PAUSE_S:
                # Before a tentative word (not confirmed, nor its time) at most 0.1 s in:
                # a short word the pass missed there keeps its audio.
                tentative = k == len(candidates) - 1 and after is not committed[-1]
                return word.end + (min(gap / 2, CUT_PAUSE_S) if tentative else gap / 2)
        return committed[-2].end if len(committed) >= 2 else self.offset

    def _trim(self) -> None:
        if len(self.buffer) <= self.trim:
            return
        cut_at = self._cut_point()
        if len(self.buffer) > self.max_buffer and cut_at <= self.offset:
            # Nothing confirmed in a whole window (noise, or words that keep changing):
            # take the last hypothesis as it is rather than let the buffer grow.
            self.agreement.flush()
            cut_at = max(self.agreement.committed_end, self.offset + 5.0)
        drop = int((cut_at - self.offset) * SAMPLE_RATE)
        if drop > 0:
            self.buffer = self.buffer[drop:].copy()
            self.offset += drop / SAMPLE_RATE

    def _due(self) -> int:
        """How much new audio the next pass waits for.

        After a pass that heard nothing, and with ``early_passes`` until the first words
        are committed, half of ``min_chunk``: the first words show sooner after speech
        begins. Only on short contexts, where a pass on a short buffer is cheap (a window
        pass costs a 30 s encoder whatever it holds), and while the buffer is shorter
        than ``trim_s``: a stream slow to commit (noise, words that keep changing) does
        not pay twice for passes on a growing buffer. Passes half a second apart first
        measured 2 WER points worse, from agreements on passes that had heard a fraction
        of their audio ("J J" for a whole sentence) and text written after the audio's
        end; with those checked (``STOPPED_SHORT_S``, ``squeezed_tail``) one run
        measured 10.4 % against 10.0 %, within one file's noise, at a fifth more CPU on
        the corpus's short files (README, Streaming engines).
        """
        early = self.early_passes and not self.agreement.committed and len(self.buffer) < self.trim
        if self._short is not None and (self.heard_nothing or early):
            return self.min_chunk // 2
        return self.min_chunk

    def accept(self, samples: AudioArray) -> StreamUpdate:
        """Buffer the audio; re-decode once enough of it is new."""
        self.buffer = np.concatenate([self.buffer, samples.astype(np.float32, copy=False)])
        self.total += len(samples)
        self.unseen += len(samples)
        if self.unseen < self._due():
            return StreamUpdate((), " ".join(w.word.strip() for w in self.agreement.previous))
        self.unseen = 0
        hypothesis = self._decode(final=False)
        self.heard_nothing = not hypothesis
        if not hypothesis and not self.agreement.previous:
            # Nothing heard: the buffer keeps only its last ``HEARD_NOTHING_KEEP_S``, so a
            # silent lead-in is not decoded again and again.
            keep = int(HEARD_NOTHING_KEEP_S * SAMPLE_RATE)
            if len(self.buffer) > 2 * keep:
                self.buffer = self.buffer[-keep:].copy()
                self.offset = (self.total - keep) / SAMPLE_RATE
        stopped_short = bool(hypothesis) and (
            unheard_speech_s(self.buffer, hypothesis[-1].end - self.offset) >= STOPPED_SHORT_S
        )
        self.stopped_short += stopped_short
        update = self.agreement.insert(hypothesis, commit=not stopped_short)
        self._trim()
        return update

    def finish(self) -> StreamUpdate:
        """Decode what is left once more and commit all of it."""
        update = self.agreement.flush(self._decode(final=True))
        self.buffer = np.zeros(0, np.float32)
        return update

    def transcript(self) -> Transcript:
        """Everything committed so far."""
        return self.agreement.transcript(self.total / SAMPLE_RATE, self.language, self.model_name)
