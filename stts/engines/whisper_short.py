"""Whisper on only the audio it has: one short-context decode for live streams.

faster-whisper pads every window to Whisper's 30 s (3000 mel frames), so a live stream
that re-decodes a 3-8 s buffer pays for 30 s of encoder each time. CTranslate2's Whisper
encoder takes shorter inputs (its positional embedding is sliced to the input), as
whisper.cpp's ``audio_ctx`` does. :class:`ShortContextDecoder` computes the log-mel
features of the buffer only, pads them with ``pad_s`` of silence and up to a whole
second, and runs the encoder, greedy/beam generation (``ctranslate2.models.Whisper``)
and the cross-attention word alignment on that: encoder cost follows the audio.

Whisper was trained on 30 s windows, and a short context can cost accuracy or make it
hallucinate on the padding, so the last pass of an utterance (``final``) may retry
hotter like faster-whisper does, every pass is bounded in tokens by the audio length,
and streamed WER is measured against the offline path in ``bench/streaming.py``.

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

from stts.transcript import Word

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
"""faster-whisper's defaults: punctuation glued to the word before/after it."""

FRAMES_PER_SECOND = 100
"""Log-mel frames per second (hop 160 at 16 kHz)."""
MAX_FRAMES = 3000
"""Whisper's window: 30 s of frames, the longest input the encoder has positions for."""


@dataclass(frozen=True, slots=True)
class ShortDecode:
    """One pass: words in buffer time (seconds from the buffer's start)."""

    words: list[Word]
    language: str | None
    frames: int
    """Mel frames the encoder ran on (padded), for the record."""


class ShortContextDecoder:
    """Decodes a short buffer on a loaded faster-whisper model, encoder sized to it."""

    def __init__(
        self,
        model: Any,
        *,
        pad_s: float = 1.0,
        min_context_s: float = 0.0,
        timestamps: bool = True,
    ) -> None:
        self.timestamps = timestamps
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
    ) -> ShortDecode:
        """Transcribe ``audio`` (16 kHz mono float32, at most 30 s) with word timings."""
        features = self._model.feature_extractor(audio)
        content = min(features.shape[-1] - 1, MAX_FRAMES)  # as faster-whisper counts them
        frames = self.frames_for(content)
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
            looping = bool(text) and get_compression_ratio(text) > compression_ratio_threshold
            if not looping and avg_logprob >= log_prob_threshold:
                break
            if no_speech > no_speech_threshold:
                break  # silence: faster-whisper does not retry it either
        if no_speech > no_speech_threshold and avg_logprob < log_prob_threshold:
            return ShortDecode([], language, frames)

        text_tokens = [t for t in tokens if t < tokenizer.eot]
        if not text_tokens:
            return ShortDecode([], language, frames)
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
        return ShortDecode(words, language, frames)
