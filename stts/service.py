"""EngineManager: every engine of a process — lookup, scheduling, fallback, graceful stop.

Requests are admitted on per-(engine, model) slots (:mod:`stts.slots`: worker pools,
bounded queues, places held from before decoding). The manager walks the fallback
chain (engines that cannot do the task skipped, never after a stream has handed out
text), answers digital silence without any engine, enforces each request's deadline
and, on a graceful stop, refuses new work (:meth:`EngineManager.drain`) and then
answers what is still waiting (:meth:`EngineManager.abort`).

Its parts live beside it: :mod:`stts.fallback` (one request's attempts and labels),
:mod:`stts.deadlines` (waiting on a job, cut short by the stop), :mod:`stts.language_guess`
(language identification: which engine, its job, its answer) and
:mod:`stts.engine_report`; the names others import stay importable from here.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import replace
from typing import TypeVar

import numpy as np

from stts.audio import SAMPLE_RATE, AudioArray, DecodedAudio
from stts.config import Settings
from stts.deadlines import JobWaits
from stts.engine_report import engine_report
from stts.engines.base import (
    Availability,
    CancelToken,
    Capabilities,
    SegmentCallback,
    TranscribeOptions,
)
from stts.engines.registry import engine_names, get_engine_class
from stts.errors import (
    EngineError,
    InvalidRequest,
    SttsError,
    UnknownEngine,
    UnknownModel,
)
from stts.fallback import advance, attempts, gated_transcribe
from stts.language_guess import (
    LanguageGuess,
    guess_language,
    language_detector,
    submit_language_job,
)
from stts.languages import check_language
from stts.slots import (
    SHUTDOWN_RETRY_AFTER_S,
    EngineSlot,
    Reservation,
    SlotKey,
    SlotStats,
    shutting_down,
)
from stts.transcript import Transcript

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "SHUTDOWN_RETRY_AFTER_S",
    "EngineManager",
    "EngineSlot",
    "LanguageGuess",
    "Reservation",
    "SlotKey",
    "SlotStats",
    "engine_report",
    "shutting_down",
]


class EngineManager:
    """Every engine of one server or process: lookup, loading, scheduling and fallback."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._slots: dict[SlotKey, EngineSlot] = {}
        self._slots_lock = threading.Lock()
        self._closed = False
        self._observers: list[Callable[[Transcript, float], None]] = []
        # Choices already accepted by resolve(). Only accepted ones are kept, so the dict is
        # bounded by the engines' model lists, and the per-request path skips the engines'
        # model discovery (package lookups, directory checks), which can't change the answer.
        self._resolved: dict[tuple[str | None, str | None], SlotKey] = {}
        for name in settings.engines:
            get_engine_class(name)  # fail fast on a typo in the config
        self._stop = threading.Event()
        self._draining = False
        self._waits = JobWaits(settings)
        self._start_reaper()

    # -- lookup ---------------------------------------------------------------

    def add_observer(self, observer: Callable[[Transcript, float], None]) -> None:
        """Call ``observer(transcript, seconds)`` after every successful transcription."""
        self._observers.append(observer)

    def observe(self, transcript: Transcript, started: float) -> Transcript:
        """Tell the observers about a transcription that began at ``started``; returns it."""
        elapsed = time.perf_counter() - started
        for observer in self._observers:
            try:
                observer(transcript, elapsed)
            except Exception:
                logger.exception("transcription observer failed")
        return transcript

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed

    @property
    def enabled(self) -> list[str]:
        """Engines this manager offers, in configured order."""
        return list(self.settings.engines)

    @property
    def default_engine(self) -> str:
        """The engine used when a request names none."""
        return self.settings.default_engine

    def resolve(self, engine: str | None, model: str | None = None) -> SlotKey:
        """Validate an engine/model choice from a request, without loading anything."""
        key = self._resolved.get((engine, model))
        if key is not None:
            return key
        name = engine or self.default_engine
        if name not in self.settings.engines:
            if name in engine_names():
                raise UnknownEngine(
                    f"engine {name!r} is not enabled on this server; "
                    f"enabled: {', '.join(self.settings.engines)}"
                )
            raise UnknownEngine(
                f"unknown engine {name!r}; enabled: {', '.join(self.settings.engines)}"
            )
        engine_cls = get_engine_class(name)
        chosen = model or engine_cls.default_model(self.settings)
        if chosen not in engine_cls.known_models(
            self.settings
        ) and chosen != engine_cls.default_model(self.settings):
            raise UnknownModel(f"engine {name!r} has no model {chosen!r}")
        key = self._resolved[(engine, model)] = (name, chosen)
        return key

    def slot(self, key: SlotKey) -> EngineSlot:
        """The slot for a resolved key, created (not loaded) on first use."""
        with self._slots_lock:
            if self._closed:
                raise shutting_down()
            slot = self._slots.get(key)
            if slot is None:
                slot = EngineSlot(get_engine_class(key[0]), key[1], self.settings)
                self._slots[key] = slot
            return slot

    def reserve(self, key: SlotKey) -> Reservation:
        """Hold a place for one request on this engine before any work is done for it
        (decoding included); Overloaded at once when full, ShuttingDown while draining."""
        if self._draining:
            raise shutting_down()
        return self.slot(key).reserve()

    # -- graceful stop ----------------------------------------------------------

    @property
    def draining(self) -> bool:
        """True once :meth:`drain` was called: no new request is admitted."""
        return self._draining

    @property
    def aborted(self) -> bool:
        """True once :meth:`abort` was called."""
        return self._waits.aborted

    def drain(self) -> None:
        """Admit nothing new; requests already admitted go on."""
        self._draining = True

    def abort(self) -> None:
        """The grace period is over: answer every waiting request ShuttingDown now and
        cancel its engine job (a running engine stops at its next segment)."""
        self._draining = True
        self._waits.abort()

    async def await_job(self, future: Future[T], cancel: CancelToken, timeout: float) -> T:
        """Wait for one engine job without blocking the loop.

        The deadlines count what the request itself costs: the job may wait for a worker
        ``queue_timeout_s`` (Overloaded, 503, after that: it never runs); the model's load
        is not counted; the engine's work has ``timeout`` seconds from its start
        (TranscriptionTimeout, 504). The job is also stopped when the caller goes away
        (CancelledError) or the graceful stop runs out of time (ShuttingDown).
        """
        return await self._waits.await_job(future, cancel, timeout)

    def wait_job(self, future: Future[T], cancel: CancelToken, timeout: float) -> T:
        """Blocking :meth:`await_job` (CLI and library), with the same deadlines."""
        return self._waits.wait_job(future, cancel, timeout)

    def probe(self, name: str) -> Availability:
        """Installed / model found, without loading (cheap)."""
        return get_engine_class(name).probe(self.settings)

    def warn_unavailable(self) -> list[str]:
        """Log one line per enabled engine that cannot run here, with why (at start-up);
        returns their names. Requests for such an engine get 503 ``engine_unavailable``."""
        names = []
        # An engine the operator did not ask for (on in the default list, its extra not
        # installed, e.g. PocketSphinx beside Whisper) is said at info level, not warned.
        chosen = "engines" in self.settings.model_fields_set
        for name in self.enabled:
            availability = self.probe(name)
            if not availability.available:
                names.append(name)
                asked = chosen or name == self.settings.default_engine
                logger.log(
                    logging.WARNING if asked else logging.INFO,
                    "engine %s is enabled%s but cannot run: %s (requests for it get 503)",
                    name,
                    "" if asked else " by default",
                    availability.reason,
                )
        return names

    def loaded_slots(self) -> list[EngineSlot]:
        """All slots created so far."""
        with self._slots_lock:
            return list(self._slots.values())

    def is_loaded(self, name: str) -> bool:
        """Whether any model of this engine is loaded."""
        return any(s.name == name and s.state == "loaded" for s in self.loaded_slots())

    @property
    def ready(self) -> bool:
        """True once the default engine's default model is loaded (or idle-unloaded)."""
        key = self.resolve(None)
        slot = self._slots.get(key)
        # A model freed for being idle is still ready: the next request loads it again.
        return slot is not None and (
            slot.state == "loaded" or (slot.state == "unloaded" and slot.unloads > 0)
        )

    def preload(self) -> None:
        """Load the default engine now (blocking); errors are remembered, not raised."""
        try:
            self.slot(self.resolve(None)).ensure_loaded()
        except SttsError as exc:
            logger.error("default engine failed to load: %s", exc.message)

    def chain(self, key: SlotKey, options: TranscribeOptions) -> list[SlotKey]:
        """The chosen engine, then the configured fallbacks able to do the task (translate)
        in the request's language; an English-only fallback never answers German."""
        keys = [key]
        for name in self.settings.fallback:
            if name == key[0] or name not in self.settings.engines:
                continue
            candidate = (name, get_engine_class(name).default_model(self.settings))
            caps = self.capabilities(candidate)
            if options.task == "translate" and not caps.translation:
                continue
            if options.language and caps.languages and options.language not in caps.languages:
                continue
            keys.append(candidate)
        return keys

    def deadline(self, audio_seconds: float) -> float:
        """Seconds a request may take: a fixed part plus a part per second of audio."""
        return self.settings.timeout_base_s + self.settings.timeout_per_audio_s * audio_seconds

    def check_options(self, key: SlotKey, options: TranscribeOptions) -> TranscribeOptions:
        """``options`` with the language normalised (``en-US``, ``english`` -> ``en``), or
        InvalidLanguage (400) if the engine doesn't know it: call before reading audio.
        Translation by an engine that can't translate is refused too (400), never done as
        a plain transcription."""
        if options.task == "translate" and not self.capabilities(key).translation:
            raise InvalidRequest(
                f"engine {key[0]!r} cannot translate; use a multilingual Whisper model",
                param="model",
            )
        if options.language is None:
            return options
        caps = self.capabilities(key)
        language = check_language(options.language, caps.languages, key[0], key[1])
        return replace(options, language=language)

    def capabilities(self, key: SlotKey) -> Capabilities:
        """What an engine's model can do: from the loaded model, else from its files
        (nothing is loaded)."""
        slot = self._slots.get(key)
        caps = slot.capabilities if slot is not None else None
        if caps is None:
            caps = get_engine_class(key[0])(self.settings, key[1]).capabilities
        return caps

    # -- transcription --------------------------------------------------------

    @staticmethod
    def _samples(audio: DecodedAudio | AudioArray) -> AudioArray:
        if isinstance(audio, DecodedAudio):
            return audio.samples
        arr = np.asarray(audio, dtype=np.float32)
        if arr.ndim != 1:
            raise InvalidRequest("audio must be 16 kHz mono: a one-dimensional array")
        return arr

    def submit_attempt(
        self,
        key: SlotKey,
        samples: AudioArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None,
        cancel: CancelToken,
        reservation: Reservation | None = None,
    ) -> Future[Transcript]:
        """One engine's attempt, behind its ``speech_gate`` when it has one (no fallback;
        the silence check is the caller's): the same answer a request gets from it."""
        if self.settings.engine_settings(key[0]).speech_gate:
            return self.slot(key).submit_call(
                functools.partial(
                    gated_transcribe,
                    samples=samples,
                    options=options,
                    on_segment=on_segment,
                    cancel=cancel,
                ),
                cancel,
                reservation,
            )
        return self.slot(key).submit(
            samples, options, on_segment=on_segment, cancel=cancel, reservation=reservation
        )

    async def transcribe_async(
        self,
        audio: DecodedAudio | AudioArray,
        *,
        engine: str | None = None,
        model: str | None = None,
        options: TranscribeOptions | None = None,
        on_segment: SegmentCallback | None = None,
        cancel: CancelToken | None = None,
        reservation: Reservation | None = None,
        on_engine: Callable[[SlotKey], None] | None = None,
    ) -> Transcript:
        """Transcribe on a worker thread without blocking the event loop; falls back on failure.

        ``reservation`` is the place taken before decoding (else one is taken now);
        ``on_engine`` hears which engine each attempt goes to.
        """
        samples = self._samples(audio)
        cancel = cancel or CancelToken()
        key = reservation.key if reservation is not None else self.resolve(engine, model)
        if reservation is None and self._draining:
            raise shutting_down()
        timeout = self.deadline(len(samples) / SAMPLE_RATE)
        run = attempts(
            self,
            samples,
            key,
            options or TranscribeOptions(),
            on_segment,
            cancel,
            reservation,
            on_engine,
        )
        step = advance(run)
        while isinstance(step, Future):
            try:
                result = await self.await_job(step, cancel, timeout)
            except EngineError as exc:
                step = advance(run, error=exc)
                continue
            step = advance(run, result=result)
        return step

    def transcribe(
        self,
        audio: DecodedAudio | AudioArray,
        *,
        engine: str | None = None,
        model: str | None = None,
        options: TranscribeOptions | None = None,
        on_segment: SegmentCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        """Blocking variant for the CLI and library: same pools, limits and fallback."""
        samples = self._samples(audio)
        cancel = cancel or CancelToken()
        timeout = self.deadline(len(samples) / SAMPLE_RATE)
        run = attempts(
            self,
            samples,
            self.resolve(engine, model),
            options or TranscribeOptions(),
            on_segment,
            cancel,
        )
        step = advance(run)
        while isinstance(step, Future):
            try:
                result = self.wait_job(step, cancel, timeout)
            except EngineError as exc:
                step = advance(run, error=exc)
                continue
            step = advance(run, result=result)
        return step

    # -- language identification (stts.language_guess) -----------------------

    def language_detector(self) -> str:
        """The default engine if it can identify languages, else the first enabled that can."""
        return language_detector(self)

    async def detect_language_async(
        self,
        audio: DecodedAudio | AudioArray,
        *,
        engine: str | None = None,
        model: str | None = None,
        top: int = 5,
        reservation: Reservation | None = None,
    ) -> LanguageGuess:
        """Which language is spoken (no fallback: the answer is that engine's opinion)."""
        job = submit_language_job(self, self._samples(audio), engine, model, reservation)
        ranked = await self.await_job(job.future, job.cancel, job.timeout)
        return guess_language(ranked, job.key, top)

    def detect_language(
        self,
        audio: DecodedAudio | AudioArray,
        *,
        engine: str | None = None,
        model: str | None = None,
        top: int = 5,
    ) -> LanguageGuess:
        """Blocking variant of :meth:`detect_language_async` for the CLI and library."""
        job = submit_language_job(self, self._samples(audio), engine, model)
        ranked = self.wait_job(job.future, job.cancel, job.timeout)
        return guess_language(ranked, job.key, top)

    # -- idle unloading and close ---------------------------------------------

    def _start_reaper(self) -> None:
        """A daemon thread that frees models idle longer than their ``idle_unload_s``."""
        periods = [self.settings.engine_settings(n).idle_unload_s for n in self.settings.engines]
        periods = [p for p in periods if p > 0]
        if not periods:
            return
        interval = min(30.0, max(0.05, min(periods) / 4))

        def reap() -> None:
            while not self._stop.wait(interval):
                for slot in self.loaded_slots():
                    slot.unload_if_idle()

        threading.Thread(target=reap, name="stts-idle-unload", daemon=True).start()

    def close(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Refuse new jobs, drop queued ones, wait for running ones (if ``wait``; at most
        ``timeout`` seconds in all) and free every model; False if a worker outlived it."""
        with self._slots_lock:
            self._closed = True
            slots = list(self._slots.values())
        self._stop.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = True
        for slot in slots:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            finished = slot.close(wait=wait, timeout=left) and finished
        return finished

    @contextmanager
    def session(self) -> Iterator[EngineManager]:
        """``with manager.session():`` closes the manager on exit."""
        try:
            yield self
        finally:
            self.close()
