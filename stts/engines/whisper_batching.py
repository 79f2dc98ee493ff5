"""Cross-request batching for Whisper, with fair scheduling of long audio.

Every request's audio is cut into windows of at most 30 s (at the quietest moment near
the 30 s mark). One scheduler thread takes windows from all waiting requests that share
decoding options and runs them through CTranslate2 as one batch (faster-whisper's
``BatchedInferencePipeline.forward``). Each round takes one window from every waiting
request before a second from any, and served requests go to the back of the line, so a
short request is never stuck behind a long one: it rides in the next batch.

Batched decoding is greedy per window (no temperature fallback, no conditioning on the
previous window), as in faster-whisper's batched mode.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stts.engines.base import CancelToken
from stts.errors import Cancelled, ShuttingDown, TranscriptionFailed
from stts.transcript import Segment, Word

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
WINDOW_S = 30.0
_CUT_SEARCH_S = 5.0  # look this far back from the 30 s mark for a quiet place to cut
_FRAME = 160  # 10 ms energy frames


def whisper_segment(
    index: int, seg: Mapping[str, Any], temperature: float | None = None
) -> Segment:
    """A faster-whisper segment (as a dict) as an stts Segment, times rounded to 1 ms."""
    if temperature is None and seg.get("temperature") is not None:
        temperature = float(seg["temperature"])
    return Segment(
        id=index,
        start=round(float(seg["start"]), 3),
        end=round(float(seg["end"]), 3),
        text=seg["text"].strip(),
        words=tuple(
            Word(
                round(float(w["start"]), 3),
                round(float(w["end"]), 3),
                w["word"].strip(),
                round(float(w["probability"]), 4),
            )
            for w in seg.get("words") or ()
        ),
        avg_logprob=float(seg["avg_logprob"]),
        no_speech_prob=float(seg["no_speech_prob"]),
        temperature=temperature,
        compression_ratio=float(seg["compression_ratio"]),
        seek=int(seg["seek"]) if seg.get("seek") is not None else None,
        tokens=tuple(int(t) for t in seg.get("tokens") or ()),
    )


def split_windows(audio: np.ndarray[Any, Any]) -> list[tuple[int, int]]:
    """Sample ranges of at most 30 s, cut at the quietest 10 ms near each limit."""
    limit = int(WINDOW_S * SAMPLE_RATE)
    search = int(_CUT_SEARCH_S * SAMPLE_RATE)
    ranges, start = [], 0
    while len(audio) - start > limit:
        lo, hi = start + limit - search, start + limit
        frames = audio[lo:hi][: (hi - lo) // _FRAME * _FRAME].reshape(-1, _FRAME)
        quietest = int(np.argmin((frames.astype(np.float32) ** 2).mean(axis=1)))
        cut = lo + quietest * _FRAME + _FRAME // 2
        ranges.append((start, cut))
        start = cut
    ranges.append((start, len(audio)))
    return ranges


@dataclass(frozen=True)
class BatchKey:
    """Windows decode together only when these agree."""

    language: str
    task: str
    beam_size: int
    temperature: float
    initial_prompt: str | None
    word_timestamps: bool


@dataclass
class _Job:
    key: BatchKey
    windows: list[tuple[int, int]]
    audio: np.ndarray[Any, Any]
    cancel: CancelToken | None
    next_window: int = 0
    results: dict[int, list[Segment]] = field(default_factory=dict)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def waiting(self) -> int:
        return len(self.windows) - self.next_window


class WhisperBatcher:
    """One scheduler thread batching windows of concurrent requests."""

    def __init__(self, model: Any, batch_size: int, window_ms: float) -> None:
        # Heavy imports once, here; never per batch.
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import (
            BatchedInferencePipeline,
            TranscriptionOptions,
            get_suppressed_tokens,
        )

        self._pad_or_trim = pad_or_trim
        self._tokenizer_cls = Tokenizer
        self._options_cls = TranscriptionOptions
        self._suppressed = get_suppressed_tokens
        self.model = model
        self.pipeline = BatchedInferencePipeline(model)
        self.batch_size = batch_size
        self.window_s = window_ms / 1000
        self._jobs: OrderedDict[int, _Job] = OrderedDict()
        self._ids = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        self.batches = 0
        self.windows_decoded = 0
        self._thread = threading.Thread(target=self._loop, name="stts-whisper-batcher", daemon=True)
        self._thread.start()

    def transcribe(
        self, audio: np.ndarray[Any, Any], key: BatchKey, cancel: CancelToken | None
    ) -> list[Segment]:
        """Queue the windows of one request and wait for all of them."""
        job = _Job(key, split_windows(audio), audio, cancel)
        with self._cv:
            if self._closed:
                raise ShuttingDown("the Whisper batcher is stopped")
            job_id = next(self._ids)
            self._jobs[job_id] = job
            self._cv.notify_all()
        while not job.done.wait(0.05):
            if cancel is not None and cancel.cancelled:
                with self._cv:
                    self._jobs.pop(job_id, None)  # windows not yet taken never run
                raise Cancelled("the request was cancelled")
        if job.error is not None:
            raise job.error
        segments = [s for i in range(len(job.windows)) for s in job.results[i]]
        return [dataclasses.replace(s, id=i) for i, s in enumerate(segments)]

    def close(self) -> None:
        """Stop the scheduler; requests still waiting fail with ShuttingDown."""
        with self._cv:
            self._closed = True
            jobs = list(self._jobs.values())
            self._jobs.clear()
            self._cv.notify_all()
        for job in jobs:
            job.error = ShuttingDown("the Whisper engine is shutting down")
            job.done.set()
        self._thread.join(timeout=30)

    # -- scheduler ---------------------------------------------------------------------

    def _take_batch(self) -> list[tuple[_Job, int]]:
        """Round-robin: one window from each waiting job with the head's key, then more."""
        head = next(iter(self._jobs.values()))
        same = [(jid, j) for jid, j in self._jobs.items() if j.key == head.key and j.waiting]
        batch: list[tuple[_Job, int]] = []
        while len(batch) < self.batch_size:
            progressed = False
            for _, job in same:
                if job.waiting and len(batch) < self.batch_size:
                    batch.append((job, job.next_window))
                    job.next_window += 1
                    progressed = True
            if not progressed:
                break
        # Served jobs go to the back of the line; finished-taking jobs leave the queue.
        for jid, job in same:
            self._jobs.pop(jid)
            if job.waiting:
                self._jobs[jid] = job
        return batch

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._jobs:
                    self._cv.wait()
                if self._closed:
                    return
                # A short wait lets concurrent requests join this batch.
                deadline = time.monotonic() + self.window_s
                while (
                    sum(j.waiting for j in self._jobs.values()) < self.batch_size
                    and not self._closed
                    and (remaining := deadline - time.monotonic()) > 0
                ):
                    self._cv.wait(remaining)
                if self._closed:
                    return
                batch = self._take_batch()
            if batch:
                self._run(batch)

    def _run(self, batch: list[tuple[_Job, int]]) -> None:
        live = [(job, i) for job, i in batch if not (job.cancel and job.cancel.cancelled)]
        if not live:
            return
        try:
            outputs = self._forward(live)
        except Exception as exc:
            logger.exception("batched Whisper decoding failed")
            for job, _ in live:
                job.error = TranscriptionFailed("engine 'whisper' failed while transcribing")
                job.error.__cause__ = exc
                job.done.set()
            return
        self.batches += 1
        self.windows_decoded += len(live)
        for (job, index), segments in zip(live, outputs, strict=True):
            job.results[index] = segments
            if len(job.results) == len(job.windows):
                job.done.set()

    def _forward(self, batch: list[tuple[_Job, int]]) -> list[list[Segment]]:
        pad_or_trim, options_cls = self._pad_or_trim, self._options_cls
        key = batch[0][0].key
        model = self.model
        features, metadata = [], []
        for job, index in batch:
            start, end = job.windows[index]
            features.append(pad_or_trim(model.feature_extractor(job.audio[start:end])[..., :-1]))
            metadata.append(
                {"offset": start / SAMPLE_RATE, "duration": (end - start) / SAMPLE_RATE}
            )
        tokenizer = self._tokenizer_cls(
            model.hf_tokenizer, model.model.is_multilingual, task=key.task, language=key.language
        )
        options = options_cls(
            beam_size=key.beam_size,
            best_of=5,
            patience=1,
            length_penalty=1,
            repetition_penalty=1,
            no_repeat_ngram_size=0,
            log_prob_threshold=-1.0,
            no_speech_threshold=0.6,
            compression_ratio_threshold=2.4,
            condition_on_previous_text=False,
            prompt_reset_on_temperature=0.5,
            temperatures=[key.temperature],
            initial_prompt=key.initial_prompt,
            prefix=None,
            suppress_blank=True,
            suppress_tokens=self._suppressed(tokenizer, [-1]),
            without_timestamps=False,
            max_initial_timestamp=0.0,
            word_timestamps=key.word_timestamps,
            prepend_punctuations="\"'“¿([{-",
            append_punctuations="\"'.。,，!！?？:：”)]}、",
            multilingual=False,
            max_new_tokens=None,
            clip_timestamps="0",
            hallucination_silence_threshold=None,
            hotwords=None,
        )
        self.pipeline.last_speech_timestamp = 0.0
        results = self.pipeline.forward(np.stack(features), tokenizer, metadata, options)
        return [
            [
                whisper_segment(0, seg, temperature=key.temperature)
                for seg in window
                if seg["text"].strip()
            ]
            for window in results
        ]
