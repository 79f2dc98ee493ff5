"""Whisper on only the audio it has: one short-context decode for live streams.

faster-whisper pads every window to Whisper's 30 s (3000 mel frames), so a live stream
that re-decodes a 3-8 s buffer pays for 30 s of encoder each time. CTranslate2's Whisper
encoder takes shorter inputs (its positional embedding is sliced to the input), as
whisper.cpp's ``audio_ctx`` does. :class:`ShortContextDecoder` computes the log-mel
features of the buffer only, pads them with ``pad_s`` of silence and up to a whole
second, and runs the encoder, greedy/beam generation (``ctranslate2.models.Whisper``)
and the cross-attention word alignment on that: encoder cost follows the audio.

Whisper was trained on 30 s windows, and on a short context it now and then loops on a
phrase or stops before the audio does ("She had a j" for a whole sentence). Every pass
is bounded in tokens by the audio length; a pass that loops (a phrase three times in a
row, more words than anyone speaks, the token budget used up, or faster-whisper's
compression ratio) or, on the last pass of an utterance, leaves loud audio after its
last word is decoded again on the whole 30 s window; an interim pass only has its loop
cut off (the next pass hears the audio again). Every pass drops text written after the
audio ends, which the alignment squeezes into nothing (:func:`squeezed_tail`). On the
corpus's whole files (26, 110 s, greedy) this gives 11.4 % WER against 12.9 % for
faster-whisper's windows at 28 % of the CPU, with 2 of 26 files decoded twice; without
the fallback 16.1 %.

Built from the pieces of the loaded ``faster_whisper.WhisperModel`` (its feature
extractor, tokenizer, prompt and alignment helpers), so it shares the model's weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import (
    get_compression_ratio,
    get_suppressed_tokens,
    merge_punctuations,
)

from stts.audio.silence import frame_power
from stts.engines.repetition import repeat_start
from stts.transcript import Word

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
"""faster-whisper's defaults: punctuation glued to the word before/after it."""

FRAMES_PER_SECOND = 100
"""Log-mel frames per second (hop 160 at 16 kHz)."""
MAX_FRAMES = 3000
"""Whisper's window: 30 s of frames, the longest input the encoder has positions for."""
RETRY_FRAMES = 800
"""A failed pass is decoded again on 8 s first (see ShortContextDecoder.decode)."""


@dataclass(frozen=True, slots=True)
class ShortDecode:
    """One pass: words in buffer time (seconds from the buffer's start)."""

    words: list[Word]
    language: str | None
    frames: int
    """Mel frames the encoder ran on (padded), for the record."""
    fell_back: str | None = None
    """Why the pass was decoded again on a longer context, 8 s or the whole 30 s window
    (``looping``, ``cut_short``), or had its loop cut off (``loop_cut``, interim passes),
    or None."""


LOUD_DB = 12.0
"""A frame within this many dB of the buffer's loud frames (90th percentile) is speech."""
MAX_WORDS_PER_S = 5.0
"""Fast speech is 3-4 words a second; more than this (plus 3) is a loop."""
ABOVE_FLOOR_DB = 6.0
"""...and at least this many dB above the quietest frames (10th percentile)."""
UNHEARD_S = 0.5
"""Speech the words leave uncovered at the end for this long makes a pass ``cut_short``."""


def _failure(result: ShortDecode, looped: bool, audio: np.ndarray, check_end: bool) -> str | None:
    """Why a pass must be decoded again (``looping``, ``cut_short``), or None."""
    if looped:
        return "looping"
    if check_end and result.words and unheard_speech_s(audio, result.words[-1].end) >= UNHEARD_S:
        return "cut_short"
    return None


def loop_start(words: list[Word], times: int = 3, longest: int = 8) -> int | None:
    """Where a decoding loop begins: the index of a 2+ word phrase's second copy when it
    comes ``times`` times in a row, or None.

    Single words may repeat ("zero zero zero"); phrases hardly ever do.
    """
    text = ["".join(c for c in w.word.lower() if c.isalnum()) for w in words]
    return repeat_start(text, times, 2, longest)


SQUEEZED_S = 0.02
"""A word the alignment gives no more time than this has no audio of its own."""
CHARACTER_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
"""Written without spaces: faster-whisper splits their words into characters."""


def squeezed_tail(words: list[Word], language: str | None = None, longest: int = 8) -> int | None:
    """Where a pass's words end with text that has no audio under it, or None.

    Whisper sometimes writes on after the audio ends: the last phrase once more ("… by
    a similar process by a similar process.") or a variant of it; the alignment
    squeezes those words into nothing after the last word it could place. Cut are: a
    trailing copy of the phrase before it (2+ words; from 3 words, one may be spelt
    differently: "retrovialities" then "Retrivialities") whose words, all but one (in
    languages written without spaces: all), last no time (a phrase said twice has audio
    under both copies), and a trailing run of 3+ words that all last no time (one or two
    may be the audio cut mid-word; not for languages written without spaces, whose words
    are single characters that may last no time in speech).
    """

    def squeezed(word: Word) -> bool:
        return word.end - word.start <= SQUEEZED_S

    text = ["".join(c for c in w.word.lower() if c.isalnum()) for w in words]
    end = len(words)
    cut = True
    while cut:  # a phrase written three times has two copies squeezed
        cut = False
        for n in range(2, min(longest, end // 2) + 1):
            copy = words[end - n : end]
            before = text[end - 2 * n : end - n]
            same = sum(a == b for a, b in zip(text[end - n : end], before, strict=True))
            # Single characters may last no time in speech: there, all of the copy must.
            timeless = n if language in CHARACTER_LANGUAGES else n - 1
            if same >= (n if n < 3 else n - 1) and sum(squeezed(w) for w in copy) >= timeless:
                end -= n
                cut = True
                break
    if language not in CHARACTER_LANGUAGES:
        run = end
        while run > 0 and squeezed(words[run - 1]):
            run -= 1
        if end - run >= 3:
            end = run
    return end if end < len(words) else None


def _frame_db(audio: np.ndarray) -> np.ndarray:
    """Energy of each whole 25 ms frame in dB (DC removed)."""
    power = frame_power(audio[: len(audio) // 400 * 400])
    db: np.ndarray = 10.0 * np.log10(power + 1e-12)
    return db


def unheard_speech_s(audio: np.ndarray, words_end: float) -> float:
    """Seconds of loud audio after ``words_end`` (plus 0.2 s): speech no word covers.

    Whisper on a short context sometimes stops early ("She had a j" for a whole
    sentence); the loud frames after its last word are what it did not transcribe.
    """
    db = _frame_db(audio)
    if not len(db):
        return 0.0
    # Near the loud frames, and well above the quietest: steady background noise is
    # loud next to speech at 10 dB SNR, but it is the floor, not speech.
    loud = (db >= float(np.percentile(db, 90)) - LOUD_DB) & (
        db >= float(np.percentile(db, 10)) + ABOVE_FLOOR_DB
    )
    first = int((words_end + 0.2) / 0.025)
    return float(loud[first:].sum()) * 0.025


class ShortContextDecoder:
    """Decodes a short buffer on a loaded faster-whisper model, encoder sized to it."""

    def __init__(
        self,
        model: Any,
        *,
        pad_s: float = 1.0,
        min_context_s: float = 0.0,
        timestamps: bool = True,
        fallback: bool = True,
        retry_s: float | None = RETRY_FRAMES / FRAMES_PER_SECOND,
    ) -> None:
        self.timestamps = timestamps
        self.fallback = fallback
        # A failed pass's second try (then the whole window); None: the window at once.
        self.retry_frames = (
            MAX_FRAMES if retry_s is None else min(MAX_FRAMES, int(retry_s * FRAMES_PER_SECOND))
        )
        self._model = model
        self._ct2 = model.model
        self.multilingual = bool(self._ct2.is_multilingual)
        self.pad_frames = int(pad_s * FRAMES_PER_SECOND)
        self.min_frames = int(min_context_s * FRAMES_PER_SECOND)
        self._tokenizers: dict[tuple[str, str | None], Tokenizer] = {}

    def _tokenizer(self, task: str, language: str | None) -> Tokenizer:
        key = (task, language)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(
                self._model.hf_tokenizer, self.multilingual, task=task, language=language
            )
        return self._tokenizers[key]

    def frames_for(self, content_frames: int) -> int:
        """The encoder input for this much audio: ``pad_s`` more, up to a whole second."""
        wanted = max(content_frames + self.pad_frames, self.min_frames)
        return min(MAX_FRAMES, math.ceil(wanted / FRAMES_PER_SECOND) * FRAMES_PER_SECOND)

    def decode(
        self,
        audio: np.ndarray,
        *,
        language: str | None,
        task: str = "transcribe",
        prompt: str | None = None,
        beam_size: int = 1,
        temperatures: tuple[float, ...] = (0.0,),
        max_new_tokens: int | None = None,
        no_speech_threshold: float = 0.6,
        log_prob_threshold: float = -1.0,
        compression_ratio_threshold: float = 2.4,
        check_end: bool = True,
        window_fallback: bool = True,
    ) -> ShortDecode:
        """Transcribe ``audio`` (16 kHz mono float32, at most 30 s) with word timings.

        With ``fallback``, a pass that loops (compression ratio, or the token budget used
        up) or stops while loud audio is left after its last word is decoded again on a
        longer context: ``retry_s`` (8 s), then, if that fails as well, the whole 30 s
        window, as faster-whisper would decode it.
        ``check_end`` off: a live stream's interim pass, whose audio may end mid-word,
        is only checked for loops. ``window_fallback`` off: a loop is cut where it
        starts instead of decoding again (interim passes: the next pass sees the audio
        again anyway).
        """
        features = self._model.feature_extractor(audio)
        content = min(features.shape[-1] - 1, MAX_FRAMES)  # as faster-whisper counts them
        options: dict[str, Any] = {
            "language": language,
            "task": task,
            "prompt": prompt,
            "beam_size": beam_size,
            "temperatures": temperatures,
            "max_new_tokens": max_new_tokens,
            "no_speech_threshold": no_speech_threshold,
            "log_prob_threshold": log_prob_threshold,
            "compression_ratio_threshold": compression_ratio_threshold,
        }
        result, looping = self._decode(features, content, self.frames_for(content), **options)
        if not self.fallback or result.frames >= MAX_FRAMES:
            return result
        seconds = content / FRAMES_PER_SECOND
        too_many = len(result.words) > MAX_WORDS_PER_S * seconds + 3
        loop_at = loop_start(result.words)
        if not window_fallback:
            if loop_at is None and not looping and not too_many:
                return result
            keep = loop_at if loop_at is not None else int(MAX_WORDS_PER_S * seconds)
            return ShortDecode(result.words[:keep], result.language, result.frames, "loop_cut")
        reason = _failure(result, looping or too_many or loop_at is not None, audio, check_end)
        if reason is None:
            return result
        # Decoded again on a longer context: first retry_frames, checked as the first
        # pass was, then the whole window if that fails too. On the corpus's three
        # streams whose last pass failed, 8 s got every one right at a quarter of the
        # window's cost (0.9-1.3 CPU-s against 4.0-4.1); 15 and 20 s did worse than 8.
        again = result
        for frames in (self.retry_frames, MAX_FRAMES):
            if frames <= again.frames:
                continue
            again, looping = self._decode(features, content, frames, **options)
            too_many = len(again.words) > MAX_WORDS_PER_S * seconds + 3
            looped = looping or too_many or loop_start(again.words) is not None
            if frames == MAX_FRAMES or _failure(again, looped, audio, check_end) is None:
                break
        return ShortDecode(again.words, again.language, again.frames, reason)

    def _decode(
        self,
        features: np.ndarray,
        content: int,
        frames: int,
        *,
        language: str | None,
        task: str,
        prompt: str | None,
        beam_size: int,
        temperatures: tuple[float, ...],
        max_new_tokens: int | None,
        no_speech_threshold: float,
        log_prob_threshold: float,
        compression_ratio_threshold: float,
    ) -> tuple[ShortDecode, bool]:
        """One decode on ``frames`` encoder frames; also whether it looped."""
        segment = np.zeros((features.shape[0], frames), np.float32)
        segment[:, :content] = features[:, :content]
        encoder_output = self._model.encode(segment)

        if self.multilingual and language is None:
            language_token, _p = self._ct2.detect_language(encoder_output)[0][0]
            language = language_token[2:-2]
        tokenizer = self._tokenizer(task, language if self.multilingual else "en")
        previous = tokenizer.encode(" " + prompt.strip()) if prompt and prompt.strip() else []
        prompt_tokens = self._model.get_prompt(
            tokenizer, previous, without_timestamps=not self.timestamps
        )
        budget = max_new_tokens or self._model.max_length // 2
        max_length = min(self._model.max_length, len(prompt_tokens) + budget)
        suppress = get_suppressed_tokens(tokenizer, [-1])

        tokens: list[int] = []
        no_speech = 0.0
        avg_logprob = 0.0
        looping = False
        for temperature in temperatures:
            sampling: dict[str, Any] = (
                {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature}
                if temperature > 0
                else {"beam_size": beam_size}
            )
            result = self._ct2.generate(
                encoder_output,
                [prompt_tokens],
                max_length=max_length,
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=suppress,
                max_initial_timestamp_index=50,
                **sampling,
            )[0]
            tokens = list(result.sequences_ids[0])
            no_speech = float(result.no_speech_prob)
            avg_logprob = float(result.scores[0]) * len(tokens) / (len(tokens) + 1)
            text = tokenizer.decode(tokens).strip()
            looping = (
                bool(text) and get_compression_ratio(text) > compression_ratio_threshold
            ) or (len(tokens) >= budget)
            if not looping and avg_logprob >= log_prob_threshold:
                break
            if no_speech > no_speech_threshold:
                break  # silence: faster-whisper does not retry it either
        if no_speech > no_speech_threshold and avg_logprob < log_prob_threshold:
            return ShortDecode([], language, frames), False

        text_tokens = [t for t in tokens if t < tokenizer.eot]
        if not text_tokens:
            return ShortDecode([], language, frames), looping
        alignment = self._model.find_alignment(tokenizer, [text_tokens], encoder_output, content)
        timings = alignment[0] if alignment else []
        merge_punctuations(timings, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS)
        limit = content / FRAMES_PER_SECOND
        words = [
            Word(
                round(min(float(t["start"]), limit), 3),
                round(min(float(t["end"]), limit), 3),
                t["word"],
                round(float(t["probability"]), 4),
            )
            for t in timings
            if t["word"]
        ]
        squeezed = squeezed_tail(words, language)
        return ShortDecode(words[:squeezed], language, frames), looping
