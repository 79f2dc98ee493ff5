"""One request's attempts: silence answered without an engine, then the fallback chain.

:func:`attempts` is a generator the manager drives, blocking or with ``await``: it yields
each attempt's future and gets the transcript (or the :class:`EngineError`) back, so the
same policy serves both. Transcripts come out labelled with the engine that answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING

from stts.audio import SAMPLE_RATE, AudioArray, is_silent
from stts.engines.base import CancelToken, Engine, SegmentCallback, TranscribeOptions
from stts.errors import EngineError
from stts.slots import Reservation, SlotKey
from stts.transcript import Segment, Transcript, fit_times
from stts.vad import has_speech

if TYPE_CHECKING:
    from stts.service import EngineManager

logger = logging.getLogger(__name__)

Attempts = Generator[Future[Transcript], Transcript, Transcript]


def empty_transcript(samples: AudioArray, options: TranscribeOptions, model: str) -> Transcript:
    """The answer for audio with nothing to hear: no text, the audio's duration."""
    return Transcript(
        text="",
        segments=(),
        duration=round(len(samples) / SAMPLE_RATE, 3),
        language=options.language,
        model=model,
        task=options.task,
    )


def label(result: Transcript, key: SlotKey, attempts: list[str]) -> Transcript:
    """``result`` as answered by ``key``, after the engines in ``attempts``."""
    return replace(
        fit_times(result),  # no cue may end after the audio does
        engine=key[0],
        model=key[1],
        fallback=len(attempts) > 1,
        attempts=tuple(attempts),
    )


def attempts(
    manager: EngineManager,
    samples: AudioArray,
    key: SlotKey,
    options: TranscribeOptions,
    on_segment: SegmentCallback | None,
    cancel: CancelToken,
    reservation: Reservation | None = None,
    on_engine: Callable[[SlotKey], None] | None = None,
) -> Attempts:
    """Walk the fallback chain: yield each attempt's future, get its result sent back.

    The caller waits on each future (blocking or with ``await``) and sends the
    transcript in, or throws the :class:`EngineError` in to move to the next engine.
    Once an engine has handed out a segment, its failure is final: a fallback would
    mix two engines' text in one answer.
    """
    if reservation is not None and reservation.key != key:
        raise ValueError("the reservation belongs to another engine")
    tried: list[str] = []
    started = time.perf_counter()
    emitted = False

    def counted(segment: Segment) -> None:
        nonlocal emitted
        emitted = True
        assert on_segment is not None
        on_segment(segment)

    if is_silent(samples):  # nothing to hear: no model time for silence
        if reservation is not None:
            reservation.release()
        if on_engine is not None:
            on_engine(key)
        silent = empty_transcript(samples, options, key[1])
        return manager.observe(label(silent, key, [key[0]]), started)
    chain = manager.chain(key, options)
    for index, candidate in enumerate(chain):
        tried.append(candidate[0])
        if on_engine is not None:
            on_engine(candidate)
        future = manager.submit_attempt(
            candidate,
            samples,
            options,
            on_segment=counted if on_segment is not None else None,
            cancel=cancel,
            reservation=reservation if candidate == key else None,
        )
        try:
            result = yield future
        except EngineError as exc:
            if emitted or index == len(chain) - 1:
                logger.warning("engine %s failed: %s", candidate[0], exc.message)
                raise
            logger.warning("engine %s failed: %s; trying the next", candidate[0], exc.message)
            continue
        return manager.observe(label(result, candidate, tried), started)
    raise AssertionError("the fallback chain is never empty")


def advance(
    run: Attempts, result: Transcript | None = None, error: EngineError | None = None
) -> Future[Transcript] | Transcript:
    """The next attempt's future, or the final transcript."""
    try:
        if error is not None:
            return run.throw(error)
        return run.send(result) if result is not None else next(run)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def gated_transcribe(
    engine: Engine,
    *,
    samples: AudioArray,
    options: TranscribeOptions,
    on_segment: SegmentCallback | None,
    cancel: CancelToken,
) -> Transcript:
    """The engine's transcript, or "" without running it when Silero VAD hears no speech
    at all (``speech_gate``: engines that write words on noise or music). Runs on the
    engine's worker, so the event loop never waits for the VAD pass."""
    if not has_speech(samples):
        return empty_transcript(samples, options, engine.model)
    return engine.transcribe(samples, options, on_segment=on_segment, cancel=cancel)
