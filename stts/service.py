"""EngineManager: every engine of a process — lookup, scheduling, fallback, graceful stop.

Requests are admitted on per-(engine, model) slots (:mod:`stts.slots`: worker pools,
bounded queues, places held from before decoding). The manager walks the fallback
chain (engines that cannot do the task skipped, never after a stream has handed out
text), answers digital silence without any engine, enforces each request's deadline
and, on a graceful stop, refuses new work (:meth:`EngineManager.drain`) and then
answers what is still waiting (:meth:`EngineManager.abort`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from stts.audio import SAMPLE_RATE, AudioArray, DecodedAudio, is_silent
from stts.config import Settings
from stts.engines.base import (
    Availability,
    CancelToken,
    Capabilities,
    Engine,
    SegmentCallback,
    TranscribeOptions,
)
from stts.engines.registry import engine_names, get_engine_class
from stts.errors import (
    EngineError,
    InvalidRequest,
    Overloaded,
    SttsError,
    TranscriptionFailed,
    TranscriptionTimeout,
    UnknownEngine,
    UnknownModel,
)
from stts.languages import check_language
from stts.slots import (
    SHUTDOWN_RETRY_AFTER_S,
    EngineSlot,
    Reservation,
    SlotKey,
    SlotStats,
    job_clock,
    shutting_down,
)
from stts.transcript import Segment, Transcript, fit_times
from stts.vad import has_speech

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


@dataclass(frozen=True, slots=True)
class LanguageGuess:
    """The spoken language as one engine judges it."""

    language: str
    probability: float
    ranked: tuple[tuple[str, float], ...]
    """The most likely languages with their probabilities, best first."""
    engine: str
    model: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {
            "language": self.language,
            "probability": self.probability,
            "languages": [{"language": lang, "probability": p} for lang, p in self.ranked],
            "engine": self.engine,
            "model": self.model,
        }


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
        # Set when the graceful stop's deadline passes: every request still waiting on an
        # engine is answered ShuttingDown and its engine job is cancelled.
        self._aborted = threading.Event()
        self._abort_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._abort_lock = threading.Lock()
        self._start_reaper()

    # -- lookup ---------------------------------------------------------------

    def add_observer(self, observer: Callable[[Transcript, float], None]) -> None:
        """Call ``observer(transcript, seconds)`` after every successful transcription."""
        self._observers.append(observer)

    def _observe(self, transcript: Transcript, started: float) -> Transcript:
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
        return self._aborted.is_set()

    def drain(self) -> None:
        """Admit nothing new; requests already admitted go on."""
        self._draining = True

    def abort(self) -> None:
        """The grace period is over: answer every waiting request ShuttingDown now and
        cancel its engine job (a running engine stops at its next segment)."""
        self._draining = True
        self._aborted.set()
        with self._abort_lock:
            waiters = list(self._abort_waiters)
        for loop, waiter in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed already
                loop.call_soon_threadsafe(_resolve, waiter)

    @contextmanager
    def _abort_waiter(self) -> Iterator[asyncio.Future[None]]:
        """A future of the running loop that completes when :meth:`abort` is called."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        entry = (loop, waiter)
        with self._abort_lock:
            self._abort_waiters.add(entry)
        if self._aborted.is_set():
            waiter.set_result(None)
        try:
            yield waiter
        finally:
            with self._abort_lock:
                self._abort_waiters.discard(entry)

    async def await_job(self, future: Future[T], cancel: CancelToken, timeout: float) -> T:
        """Wait for one engine job without blocking the loop.

        The deadlines count what the request itself costs: the job may wait for a worker
        ``queue_timeout_s`` (Overloaded, 503, after that: it never runs); the model's load
        is not counted; the engine's work has ``timeout`` seconds from its start
        (TranscriptionTimeout, 504). The job is also stopped when the caller goes away
        (CancelledError) or the graceful stop runs out of time (ShuttingDown).
        """
        wrapped = asyncio.wrap_future(future)
        with self._abort_waiter() as aborted:
            for phase, point, limit in self._phases(future, timeout):
                waiting: set[asyncio.Future[Any]] = {wrapped, aborted}
                if point is not None:
                    waiting.add(asyncio.wrap_future(point))
                try:
                    done, _ = await asyncio.wait(
                        waiting, timeout=limit, return_when=asyncio.FIRST_COMPLETED
                    )
                except asyncio.CancelledError:  # the client went away
                    self._give_up(future, cancel)
                    raise
                if wrapped in done:
                    return wrapped.result()
                if aborted in done or not done:
                    self._give_up(future, cancel)
                    wrapped.cancel()  # nobody reads what the job still ends with
                    if aborted in done:
                        raise shutting_down("the server is shutting down; the request was stopped")
                    raise self._late(phase, limit)
        raise AssertionError("unreachable: the last phase ends with the job or a limit")

    def wait_job(self, future: Future[T], cancel: CancelToken, timeout: float) -> T:
        """Blocking :meth:`await_job` (CLI and library), with the same deadlines."""
        for phase, point, limit in self._phases(future, timeout):
            waiting: list[Future[Any]] = [future] if point is None else [future, point]
            concurrent.futures.wait(waiting, timeout=limit, return_when="FIRST_COMPLETED")
            if future.done():
                return future.result()
            if point is None or not point.done():
                self._give_up(future, cancel)
                raise self._late(phase, limit)
        raise AssertionError("unreachable: the last phase ends with the job or a limit")

    def _phases(
        self, future: Future[Any], timeout: float
    ) -> list[tuple[str, Future[None] | None, float | None]]:
        """What a job is waited for in turn: a worker, the model, then its work."""
        clock = job_clock(future)
        work: tuple[str, Future[None] | None, float | None] = ("work", None, timeout)
        if clock is None:
            return [work]
        return [
            ("queue", clock.picked, self.settings.queue_timeout_s),
            ("load", clock.started, None),
            work,
        ]

    @staticmethod
    def _late(phase: str, limit: float | None) -> SttsError:
        if phase == "queue":
            return Overloaded(
                f"no worker was free within {limit:g} s (queue_timeout_s); retry later",
                retry_after=SHUTDOWN_RETRY_AFTER_S,
            )
        return _timed_out(limit or 0.0)

    def probe(self, name: str) -> Availability:
        """Installed / model found, without loading (cheap)."""
        return get_engine_class(name).probe(self.settings)

    def warn_unavailable(self) -> list[str]:
        """Log one line per enabled engine that cannot run here, with why (at start-up);
        returns their names. Requests for such an engine get 503 ``engine_unavailable``."""
        names = []
        for name in self.enabled:
            availability = self.probe(name)
            if not availability.available:
                names.append(name)
                logger.warning(
                    "engine %s is enabled but cannot run: %s (requests for it get 503)",
                    name,
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

    @staticmethod
    def _label(result: Transcript, key: SlotKey, attempts: list[str]) -> Transcript:
        return replace(
            fit_times(result),  # no cue may end after the audio does
            engine=key[0],
            model=key[1],
            fallback=len(attempts) > 1,
            attempts=tuple(attempts),
        )

    def _attempts(
        self,
        samples: AudioArray,
        key: SlotKey,
        options: TranscribeOptions,
        on_segment: SegmentCallback | None,
        cancel: CancelToken,
        reservation: Reservation | None = None,
        on_engine: Callable[[SlotKey], None] | None = None,
    ) -> Generator[Future[Transcript], Transcript, Transcript]:
        """Walk the fallback chain: yield each attempt's future, get its result sent back.

        The caller waits on each future (blocking or with ``await``) and sends the
        transcript in, or throws the :class:`EngineError` in to move to the next engine.
        Once an engine has handed out a segment, its failure is final: a fallback would
        mix two engines' text in one answer.
        """
        if reservation is not None and reservation.key != key:
            raise ValueError("the reservation belongs to another engine")
        attempts: list[str] = []
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
            silent = Transcript(
                text="",
                segments=(),
                duration=round(len(samples) / SAMPLE_RATE, 3),
                language=options.language,
                model=key[1],
                task=options.task,
            )
            return self._observe(self._label(silent, key, [key[0]]), started)
        chain = self.chain(key, options)
        for index, candidate in enumerate(chain):
            attempts.append(candidate[0])
            if on_engine is not None:
                on_engine(candidate)
            future = self.submit_attempt(
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
            return self._observe(self._label(result, candidate, attempts), started)
        raise AssertionError("the fallback chain is never empty")

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
                    _gated_transcribe,
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

    @staticmethod
    def _advance(
        run: Generator[Future[Transcript], Transcript, Transcript],
        result: Transcript | None = None,
        error: EngineError | None = None,
    ) -> Future[Transcript] | Transcript:
        """The next attempt's future, or the final transcript."""
        try:
            if error is not None:
                return run.throw(error)
            return run.send(result) if result is not None else next(run)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    @staticmethod
    def _give_up(future: Future[Any], cancel: CancelToken) -> None:
        cancel.cancel()  # a running engine stops at its next segment
        future.cancel()  # a queued job never starts

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
        run = self._attempts(
            samples,
            key,
            options or TranscribeOptions(),
            on_segment,
            cancel,
            reservation,
            on_engine,
        )
        step = self._advance(run)
        while isinstance(step, Future):
            try:
                result = await self.await_job(step, cancel, timeout)
            except EngineError as exc:
                step = self._advance(run, error=exc)
                continue
            step = self._advance(run, result=result)
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
        run = self._attempts(
            samples, self.resolve(engine, model), options or TranscribeOptions(), on_segment, cancel
        )
        step = self._advance(run)
        while isinstance(step, Future):
            try:
                result = self.wait_job(step, cancel, timeout)
            except EngineError as exc:
                step = self._advance(run, error=exc)
                continue
            step = self._advance(run, result=result)
        return step

    # -- language identification --------------------------------------------

    def _language_job(
        self,
        audio: DecodedAudio | AudioArray,
        engine: str | None,
        model: str | None,
        reservation: Reservation | None = None,
    ) -> tuple[Future[list[tuple[str, float]]], SlotKey, CancelToken, float]:
        samples = self._samples(audio)
        if reservation is not None:
            key = reservation.key
        else:
            key = self.resolve(engine or self.language_detector(), model)
        cancel = CancelToken()
        future = self.slot(key).submit_call(
            lambda e: e.detect_language(samples), cancel, reservation
        )
        seconds = min(len(samples) / SAMPLE_RATE, 30.0)  # engines look at the first 30 s
        return future, key, cancel, self.deadline(seconds)

    def language_detector(self) -> str:
        """The default engine if it can identify languages, else the first enabled that can."""
        candidates = [self.default_engine, *self.enabled]
        for name in candidates:
            if get_engine_class(name)(self.settings).capabilities.language_detection:
                return name
        return self.default_engine  # it will say that it can't

    @staticmethod
    def _guess(ranked: list[tuple[str, float]], key: SlotKey, top: int) -> LanguageGuess:
        if not ranked:
            raise TranscriptionFailed(f"engine {key[0]!r} returned no language")
        ordered = sorted(ranked, key=lambda lp: lp[1], reverse=True)[:top]
        return LanguageGuess(
            ordered[0][0],
            round(ordered[0][1], 4),
            tuple((lang, round(p, 4)) for lang, p in ordered),
            key[0],
            key[1],
        )

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
        future, key, cancel, timeout = self._language_job(audio, engine, model, reservation)
        ranked = await self.await_job(future, cancel, timeout)
        return self._guess(ranked, key, top)

    def detect_language(
        self,
        audio: DecodedAudio | AudioArray,
        *,
        engine: str | None = None,
        model: str | None = None,
        top: int = 5,
    ) -> LanguageGuess:
        """Blocking variant of :meth:`detect_language_async` for the CLI and library."""
        future, key, cancel, timeout = self._language_job(audio, engine, model)
        ranked = self.wait_job(future, cancel, timeout)
        return self._guess(ranked, key, top)

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


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _gated_transcribe(
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
        return Transcript(
            text="",
            segments=(),
            duration=round(len(samples) / SAMPLE_RATE, 3),
            language=options.language,
            model=engine.model,
            task=options.task,
        )
    return engine.transcribe(samples, options, on_segment=on_segment, cancel=cancel)


def _timed_out(timeout: float) -> TranscriptionTimeout:
    return TranscriptionTimeout(f"transcription took longer than {timeout:.0f} s and was stopped")


def engine_report(manager: EngineManager, name: str) -> dict[str, Any]:
    """Everything known about one engine, without loading it (for the API and CLI)."""
    engine_cls = get_engine_class(name)
    availability = engine_cls.probe(manager.settings)
    slots = [s for s in manager.loaded_slots() if s.name == name]
    loaded = [s for s in slots if s.state == "loaded"]
    failed = [s for s in slots if s.state == "failed"]
    caps = loaded[0].capabilities if loaded else None
    reason = availability.reason or (failed[0].error.message if failed and failed[0].error else "")
    conf = manager.settings.engine_settings(name)
    return {
        "name": name,
        "enabled": name in manager.enabled,
        "default": name == manager.default_engine,
        "installed": availability.installed,
        "model_found": availability.model_found,
        "available": availability.available and not failed,
        "loaded": bool(loaded),
        "model": availability.model,
        "models": list(availability.models),
        "reason": reason,
        "extra": engine_cls.extra,
        "capabilities": caps.as_dict() if caps else _static_capabilities(engine_cls, manager),
        "workers": conf.workers,
        "queue_size": conf.queue_size,
        "in_flight": sum(s.in_flight for s in slots),
        "max_streams": conf.max_streams,
        "open_streams": sum(s.open_streams for s in slots),
        "load_time_s": loaded[0].load_time_s if loaded else None,
        "idle_unload_s": conf.idle_unload_s,
        "idle_unloads": sum(s.unloads for s in slots),
    }


def _static_capabilities(engine_cls: type[Engine], manager: EngineManager) -> dict[str, object]:
    # An unloaded instance answers capabilities from its class defaults: no model load.
    return engine_cls(manager.settings).capabilities.as_dict()
