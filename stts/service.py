"""EngineManager: model lifecycle, per-engine worker pools, admission control, fallback.

Each (engine, model) pair gets one :class:`EngineSlot`: a model loaded once under a lock
(a failed load is remembered, not retried per request), a fixed pool of worker threads,
and a bounded number of requests admitted beyond those workers. A request that does
not fit is refused at once with :class:`~stts.errors.Overloaded` (503 + Retry-After):
nothing waits unboundedly and nothing piles up in memory.

A slot's capacity is released only when its worker thread really finishes, so a
request that timed out (504) keeps counting until the engine lets go of it: workers
are never silently lost. Cancellation (client gone, timeout) is passed to engines with
a :class:`~stts.engines.base.CancelToken` they check between segments; a job cancelled
while still queued never runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import gc
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from stts.audio import SAMPLE_RATE, AudioArray, DecodedAudio
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
    Cancelled,
    EngineError,
    EngineUnavailable,
    InvalidRequest,
    Overloaded,
    ShuttingDown,
    SttsError,
    TranscriptionFailed,
    TranscriptionTimeout,
    UnknownEngine,
    UnknownModel,
)
from stts.logs import record_timing
from stts.memory import release_free_memory
from stts.transcript import Transcript

logger = logging.getLogger(__name__)

SlotKey = tuple[str, str]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SlotStats:
    """A snapshot of one slot for /api/v1/engines, metrics and the CLI."""

    engine: str
    model: str
    state: str
    error: str | None
    workers: int
    queue_size: int
    in_flight: int
    load_time_s: float | None
    requests: int
    rejected: int
    unloads: int


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


class EngineSlot:
    """One loaded model with its worker pool and bounded admission."""

    def __init__(self, engine_cls: type[Engine], model: str, settings: Settings) -> None:
        self.engine_cls = engine_cls
        self.name = engine_cls.name
        self.model = model
        self.settings = settings
        conf = settings.engine_settings(self.name)
        self.workers = conf.workers
        self.queue_size = conf.queue_size
        self.capacity = conf.workers + conf.queue_size
        self.state = "unloaded"
        self.error: SttsError | None = None
        self.load_time_s: float | None = None
        self.capabilities: Capabilities | None = None
        self.requests = 0
        self.rejected = 0
        self.idle_unload_s = conf.idle_unload_s
        self.unloads = 0
        self.last_used = time.monotonic()
        self._in_flight = 0
        self._admit_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._instances: queue.SimpleQueue[Engine] = queue.SimpleQueue()
        self._all_instances: list[Engine] = []
        self._shared: Engine | None = None
        self._avg_job_s = 2.0
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix=f"stts-{self.name}"
        )

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished (running or queued)."""
        return self._in_flight

    def ensure_loaded(self) -> None:
        """Load the model once; later callers wait on the lock and reuse the result."""
        if self.state == "loaded":
            return
        with self._load_lock:
            if self.state == "loaded":
                return
            if self.state == "failed" and self.error is not None:
                raise self.error
            self.state = "loading"
            started = time.perf_counter()
            try:
                first = self.engine_cls(self.settings, self.model)
                first.load()
                instances = [first]
                caps = first.capabilities
                # Engines that are not thread-safe get one instance per worker.
                if not caps.thread_safe:
                    for _ in range(self.workers - 1):
                        extra = self.engine_cls(self.settings, self.model)
                        extra.load()
                        instances.append(extra)
            except SttsError as exc:
                self._fail(exc)
                raise
            except Exception as exc:
                logger.exception("engine %s model %s failed to load", self.name, self.model)
                err = EngineUnavailable(f"engine {self.name!r} failed to load its model")
                self._fail(err)
                raise err from exc
            for inst in instances:
                self._instances.put(inst)
            self._shared = first if caps.thread_safe else None
            self._all_instances = instances
            self.capabilities = caps
            self.load_time_s = time.perf_counter() - started
            self.state = "loaded"
            logger.info(
                "loaded engine %s model %s in %.2f s", self.name, self.model, self.load_time_s
            )

    def _fail(self, exc: SttsError) -> None:
        self.state = "failed"
        self.error = exc
        logger.error("engine %s model %s unavailable: %s", self.name, self.model, exc.message)

    def has_room(self) -> bool:
        """Whether a job would be admitted now (a hint to skip decoding; submit decides)."""
        return self._in_flight < self.capacity

    def retry_after(self) -> int:
        """Seconds a refused client should wait: queue length times average job time."""
        waiting = max(1, self._in_flight - self.workers + 1)
        return max(1, math.ceil(self._avg_job_s * waiting / self.workers))

    def reject(self) -> Overloaded:
        """The error for a request that does not fit (counted as a rejection)."""
        with self._admit_lock:
            self.rejected += 1
        return Overloaded(
            f"engine {self.name!r} is busy ({self._in_flight} requests in flight, "
            f"capacity {self.capacity}); retry later",
            retry_after=self.retry_after(),
        )

    def submit(
        self,
        audio: AudioArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None,
        cancel: CancelToken,
    ) -> concurrent.futures.Future[Transcript]:
        """Admit a transcription or raise Overloaded at once; never blocks."""
        return self.submit_call(
            lambda engine: engine.transcribe(audio, options, on_segment=on_segment, cancel=cancel),
            cancel,
        )

    def submit_call(
        self, job: Callable[[Engine], T], cancel: CancelToken
    ) -> concurrent.futures.Future[T]:
        """Admit ``job(engine)`` (any work on a loaded engine) or raise Overloaded at once."""
        with self._admit_lock:
            full = self._in_flight >= self.capacity
            if not full:
                self._in_flight += 1
                self.requests += 1
        if full:
            raise self.reject()
        timing = [0.0]
        # The worker runs in a copy of the caller's context: its log lines carry the
        # request id, and its engine time lands in the request's Server-Timing.
        context = contextvars.copy_context()
        try:
            future = self._executor.submit(context.run, self._run, job, cancel, timing)
        except RuntimeError as exc:  # executor shut down
            self._release(0.0)
            raise ShuttingDown("the server is shutting down") from exc
        # Released when the job really ends, including a job cancelled while still queued.
        future.add_done_callback(lambda _f: self._release(timing[0]))
        return future

    def _release(self, elapsed: float) -> None:
        with self._admit_lock:
            self._in_flight -= 1
            self.last_used = time.monotonic()
            if elapsed > 0:
                self._avg_job_s = 0.8 * self._avg_job_s + 0.2 * elapsed

    def _run(self, job: Callable[[Engine], T], cancel: CancelToken, timing: list[float]) -> T:
        started = time.perf_counter()
        try:
            if cancel.cancelled:
                raise Cancelled("the request was cancelled")
            self.ensure_loaded()
            if self._shared is not None:  # thread-safe engine: every worker uses it at once
                return job(self._shared)
            instance = self._instances.get()  # one instance per worker: check one out
            try:
                return job(instance)
            finally:
                self._instances.put(instance)
        except SttsError:
            raise
        except Exception as exc:
            logger.exception("engine %s failed while working", self.name)
            raise TranscriptionFailed(f"engine {self.name!r} failed while transcribing") from exc
        finally:
            timing[0] = time.perf_counter() - started
            record_timing("engine", timing[0])

    def unload_if_idle(self, now: float | None = None) -> bool:
        """Free the model if ``idle_unload_s`` passed with nothing admitted; True if it did.

        Runs under the admission lock, so no request can be admitted meanwhile; one admitted
        afterwards finds the slot unloaded and loads it again (``ensure_loaded``).
        """
        if self.idle_unload_s <= 0 or self.state != "loaded":
            return False
        now = time.monotonic() if now is None else now
        with self._admit_lock:
            if self._in_flight or now - self.last_used < self.idle_unload_s:
                return False
            if not self._load_lock.acquire(blocking=False):  # a load is under way
                return False
            try:
                instances, self._all_instances = self._all_instances, []
                self._instances = queue.SimpleQueue()
                self._shared = None
                self.state = "unloaded"
                self.unloads += 1
            finally:
                self._load_lock.release()
        for inst in instances:
            try:
                inst.close()
            except Exception:
                logger.exception("engine %s failed to close", self.name)
        del instances
        gc.collect()  # drop reference cycles that may still hold the model
        release_free_memory()  # else glibc keeps the freed model in the process
        logger.info(
            "unloaded engine %s model %s after %.0f s idle",
            self.name,
            self.model,
            now - self.last_used,
        )
        return True

    def stats(self) -> SlotStats:
        """Current state, for reporting."""
        return SlotStats(
            engine=self.name,
            model=self.model,
            state=self.state,
            error=self.error.message if self.error else None,
            workers=self.workers,
            queue_size=self.queue_size,
            in_flight=self._in_flight,
            load_time_s=self.load_time_s,
            requests=self.requests,
            rejected=self.rejected,
            unloads=self.unloads,
        )

    def close(self, wait: bool = True) -> None:
        """Stop taking jobs, finish running ones (if wait) and free the models."""
        self._executor.shutdown(wait=wait, cancel_futures=True)
        for inst in self._all_instances:
            try:
                inst.close()
            except Exception:
                logger.exception("engine %s failed to close", self.name)
        self._all_instances = []


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
                raise ShuttingDown("the server is shutting down")
            slot = self._slots.get(key)
            if slot is None:
                slot = EngineSlot(get_engine_class(key[0]), key[1], self.settings)
                self._slots[key] = slot
            return slot

    def probe(self, name: str) -> Availability:
        """Installed / model found, without loading (cheap)."""
        return get_engine_class(name).probe(self.settings)

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
        """The chosen engine, then the configured fallbacks able to do the task."""
        keys = [key]
        for name in self.settings.fallback:
            if name == key[0] or name not in self.settings.engines:
                continue
            if options.task == "translate":
                caps = self.slot(
                    (name, get_engine_class(name).default_model(self.settings))
                ).capabilities
                if caps is not None and not caps.translation:
                    continue
            keys.append((name, get_engine_class(name).default_model(self.settings)))
        return keys

    def deadline(self, audio_seconds: float) -> float:
        """Seconds a request may take: a fixed part plus a part per second of audio."""
        return self.settings.timeout_base_s + self.settings.timeout_per_audio_s * audio_seconds

    def check_options(self, key: SlotKey, options: TranscribeOptions) -> TranscribeOptions:
        """``options`` with the language normalised (``en-US``, ``english`` -> ``en``), or
        InvalidLanguage (400) if the engine doesn't know it: call before reading audio."""
        from stts.languages import check_language  # lead: hoist to the imports

        if options.language is None:
            return options
        slot = self._slots.get(key)
        caps = slot.capabilities if slot is not None else None
        if caps is None:  # not loaded yet: the engine answers from its files, loading nothing
            caps = get_engine_class(key[0])(self.settings, key[1]).capabilities
        language = check_language(options.language, caps.languages, key[0], key[1])
        return replace(options, language=language)

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
            result,
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
    ) -> Generator[Future[Transcript], Transcript, Transcript]:
        """Walk the fallback chain: yield each attempt's future, get its result sent back.

        The caller waits on each future (blocking or with ``await``) and sends the
        transcript in, or throws the :class:`EngineError` in to move to the next engine.
        """
        attempts: list[str] = []
        last_error: EngineError | None = None
        started = time.perf_counter()
        for candidate in self.chain(key, options):
            attempts.append(candidate[0])
            future = self.slot(candidate).submit(
                samples, options, on_segment=on_segment, cancel=cancel
            )
            try:
                result = yield future
            except EngineError as exc:
                logger.warning("engine %s failed: %s; trying the next", candidate[0], exc.message)
                last_error = exc
                continue
            return self._observe(self._label(result, candidate, attempts), started)
        assert last_error is not None
        raise last_error

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
    ) -> Transcript:
        """Transcribe on a worker thread without blocking the event loop; falls back on failure."""
        samples = self._samples(audio)
        cancel = cancel or CancelToken()
        timeout = self.deadline(len(samples) / SAMPLE_RATE)
        run = self._attempts(
            samples, self.resolve(engine, model), options or TranscribeOptions(), on_segment, cancel
        )
        step = self._advance(run)
        while isinstance(step, Future):
            try:
                result = await asyncio.wait_for(asyncio.wrap_future(step), timeout)
            except asyncio.TimeoutError as exc:
                self._give_up(step, cancel)
                raise _timed_out(timeout) from exc
            except asyncio.CancelledError:  # the client went away
                self._give_up(step, cancel)
                raise
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
                result = step.result(timeout)
            except concurrent.futures.TimeoutError as exc:
                self._give_up(step, cancel)
                raise _timed_out(timeout) from exc
            except EngineError as exc:
                step = self._advance(run, error=exc)
                continue
            step = self._advance(run, result=result)
        return step

    # -- language identification --------------------------------------------

    def _language_job(
        self, audio: DecodedAudio | AudioArray, engine: str | None, model: str | None
    ) -> tuple[Future[list[tuple[str, float]]], SlotKey, CancelToken, float]:
        samples = self._samples(audio)
        key = self.resolve(engine or self.language_detector(), model)
        cancel = CancelToken()
        future = self.slot(key).submit_call(lambda e: e.detect_language(samples), cancel)
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
    ) -> LanguageGuess:
        """Which language is spoken (no fallback: the answer is that engine's opinion)."""
        future, key, cancel, timeout = self._language_job(audio, engine, model)
        try:
            ranked = await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError as exc:
            self._give_up(future, cancel)
            raise _timed_out(timeout) from exc
        except asyncio.CancelledError:
            self._give_up(future, cancel)
            raise
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
        try:
            ranked = future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            self._give_up(future, cancel)
            raise _timed_out(timeout) from exc
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

    def close(self, wait: bool = True) -> None:
        """Finish running jobs (if wait), refuse new ones and free every model."""
        with self._slots_lock:
            self._closed = True
            slots = list(self._slots.values())
        self._stop.set()
        for slot in slots:
            slot.close(wait=wait)

    @contextmanager
    def session(self) -> Iterator[EngineManager]:
        """``with manager.session():`` closes the manager on exit."""
        try:
            yield self
        finally:
            self.close()


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
        "load_time_s": loaded[0].load_time_s if loaded else None,
        "idle_unload_s": conf.idle_unload_s,
        "idle_unloads": sum(s.unloads for s in slots),
    }


def _static_capabilities(engine_cls: type[Engine], manager: EngineManager) -> dict[str, object]:
    # An unloaded instance answers capabilities from its class defaults: no model load.
    return engine_cls(manager.settings).capabilities.as_dict()
