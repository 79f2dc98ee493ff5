"""Per-engine worker pools and admission: one :class:`EngineSlot` per (engine, model).

A slot holds one model, loaded once under a lock (a failed load is remembered, not
retried per request), a fixed pool of worker threads and room for a bounded number of
requests beyond those workers. A request takes its place with :meth:`EngineSlot.reserve`
before anything is done for it (reading, decoding) and is refused at once with
:class:`~stts.errors.Overloaded` (503 + Retry-After) when there is none: nothing waits
unboundedly and nothing piles up in memory.

A place is released only when its worker thread really finishes, so a request that
timed out (504) keeps counting until the engine lets go of it: workers are never
silently lost. Cancellation is passed to engines with a
:class:`~stts.engines.base.CancelToken` they check between segments; a job cancelled
while still queued never runs. Live streams are admitted on the slot too; how many may
be open and which instance holds each is :mod:`stts.stream_homes`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import gc
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from stts.audio import AudioArray
from stts.config import Settings
from stts.engines.base import (
    CancelToken,
    Capabilities,
    Engine,
    SegmentCallback,
    TranscribeOptions,
)
from stts.engines.streaming import EngineStream
from stts.errors import (
    Cancelled,
    EngineUnavailable,
    Overloaded,
    ShuttingDown,
    SttsError,
    TranscriptionFailed,
)
from stts.logs import record_timing
from stts.memory import release_free_memory
from stts.stream_homes import StreamHomes
from stts.transcript import Transcript

logger = logging.getLogger(__name__)

SlotKey = tuple[str, str]
"""(engine name, model name)."""
T = TypeVar("T")


class JobClock:
    """When a job's worker took it and when its engine work began (after any model load):
    the points its deadlines are counted from (:meth:`EngineManager.await_job`)."""

    def __init__(self) -> None:
        self.picked: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.started: concurrent.futures.Future[None] = concurrent.futures.Future()


def job_clock(future: concurrent.futures.Future[T]) -> JobClock | None:
    """The clock of a job submitted to a slot (None for any other future)."""
    clock = getattr(future, "stts_clock", None)
    return clock if isinstance(clock, JobClock) else None


def _mark(point: concurrent.futures.Future[None]) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # marked already
        point.set_result(None)


SHUTDOWN_RETRY_AFTER_S = 5
"""Retry-After of a ShuttingDown answer: about what a restart or a failover takes."""


def shutting_down(message: str = "the server is shutting down") -> ShuttingDown:
    return ShuttingDown(f"{message}; retry later", retry_after=SHUTDOWN_RETRY_AFTER_S)


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


class Reservation:
    """A place held in one slot's admission, from before decoding until the work ends.

    Taken with :meth:`EngineSlot.reserve` (or :meth:`EngineManager.reserve`); a request
    that does not fit is refused before it costs anything. The place passes to the job
    submitted with it and is freed when that job's worker really finishes; a reservation
    that was never used (bad audio, client gone while decoding) is freed on ``release``.
    """

    def __init__(self, slot: EngineSlot) -> None:
        self.slot = slot
        self._state = "held"  # held -> used (a job owns the place) | released
        self._lock = threading.Lock()

    @property
    def key(self) -> SlotKey:
        """The slot this place belongs to."""
        return (self.slot.name, self.slot.model)

    def take(self) -> bool:
        """Hand the place to a job; False if it was released or already used."""
        with self._lock:
            if self._state != "held":
                return False
            self._state = "used"
            return True

    def release(self) -> None:
        """Free the place unless a job owns it (then the job frees it when it ends)."""
        with self._lock:
            if self._state != "held":
                return
            self._state = "released"
        self.slot._release(0.0)


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
        self.stream_homes = StreamHomes(self.name, conf.max_streams, self._admit_lock)
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

    @property
    def open_streams(self) -> int:
        """Live streams admitted and not ended."""
        return self.stream_homes.open

    @property
    def max_streams(self) -> int:
        """Live streams this slot may have open at once."""
        return self.stream_homes.max_streams

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

    def reserve(self) -> Reservation:
        """Hold a place for one request now, or raise Overloaded at once; never blocks."""
        with self._admit_lock:
            full = self._in_flight >= self.capacity
            if not full:
                self._in_flight += 1
                self.requests += 1
        if full:
            raise self.reject()
        return Reservation(self)

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
        reservation: Reservation | None = None,
    ) -> concurrent.futures.Future[Transcript]:
        """Run a transcription in the place ``reservation`` holds, or admit it now
        (Overloaded at once when full); never blocks."""
        return self.submit_call(
            lambda engine: engine.transcribe(audio, options, on_segment=on_segment, cancel=cancel),
            cancel,
            reservation,
        )

    def submit_call(
        self,
        job: Callable[[Engine], T],
        cancel: CancelToken,
        reservation: Reservation | None = None,
    ) -> concurrent.futures.Future[T]:
        """Run ``job(engine)`` (any work on a loaded engine) in a held place, or admit it
        now (Overloaded at once when full)."""
        if reservation is None or reservation.slot is not self or not reservation.take():
            self.reserve().take()
        return self._submit(job, cancel, self._release)

    def submit_step(
        self, job: Callable[[Engine], T], cancel: CancelToken
    ) -> concurrent.futures.Future[T]:
        """Run one step of a live stream (its place is the stream's, taken at open).

        Steps share the workers' queue with whole requests, first come first served, so
        files and streams share the CPU; open streams are bounded by ``max_streams``.
        """
        return self._submit(job, cancel, lambda _elapsed: None)

    def _submit(
        self, job: Callable[[Engine], T], cancel: CancelToken, done: Callable[[float], None]
    ) -> concurrent.futures.Future[T]:
        timing = [0.0]
        clock = JobClock()
        # The worker runs in a copy of the caller's context: its log lines carry the
        # request id, and its engine time lands in the request's Server-Timing.
        context = contextvars.copy_context()
        try:
            future = self._executor.submit(context.run, self._run, job, cancel, timing, clock)
        except RuntimeError as exc:  # executor shut down
            done(0.0)
            raise shutting_down() from exc
        future.stts_clock = clock  # type: ignore[attr-defined]
        # Released when the job really ends, including a job cancelled while still queued.
        future.add_done_callback(lambda _f: done(timing[0]))
        return future

    def submit_open_stream(
        self, options: TranscribeOptions
    ) -> concurrent.futures.Future[EngineStream]:
        """Open a live stream (its place reserved by the caller) on the instance that
        holds the fewest (:class:`~stts.stream_homes.StreamHomes`)."""

        def job(engine: Engine) -> EngineStream:
            instances = None if self._shared is not None else self._all_instances
            return self.stream_homes.open_on(engine, instances, options)

        return self.submit_step(job, CancelToken())

    def stream_closed(self, stream: EngineStream) -> None:
        """An engine stream opened by :meth:`submit_open_stream` was closed."""
        self.stream_homes.closed(stream)

    def reserve_stream(self) -> None:
        """Count one more open live stream, or raise Overloaded at once (``max_streams``)."""
        with self._admit_lock:
            admitted = self.stream_homes.admit()
            if not admitted:
                self.rejected += 1
        if not admitted:
            raise self.stream_homes.refusal()

    def release_stream(self) -> None:
        """A live stream ended."""
        with self._admit_lock:
            self.stream_homes.count_out()
            self.last_used = time.monotonic()

    def _release(self, elapsed: float) -> None:
        with self._admit_lock:
            self._in_flight -= 1
            self.last_used = time.monotonic()
            if elapsed > 0:
                self._avg_job_s = 0.8 * self._avg_job_s + 0.2 * elapsed

    def _run(
        self, job: Callable[[Engine], T], cancel: CancelToken, timing: list[float], clock: JobClock
    ) -> T:
        started = time.perf_counter()
        _mark(clock.picked)
        try:
            if cancel.cancelled:
                raise Cancelled("the request was cancelled")
            self.ensure_loaded()
            _mark(clock.started)
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
            # Chained for the log above; the caller's message names no internals.
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
            busy = self._in_flight or self.open_streams
            if busy or now - self.last_used < self.idle_unload_s:
                return False
            if not self._load_lock.acquire(blocking=False):  # a load is under way
                return False
            try:
                instances, self._all_instances = self._all_instances, []
                self._instances = queue.SimpleQueue()
                self._shared = None
                self.stream_homes.clear()
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

    def close(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Stop taking jobs, drop queued ones, wait for running ones (if ``wait``; at most
        ``timeout`` seconds) and free the models; False if a worker is still running."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for thread in list(getattr(self._executor, "_threads", ())):
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                thread.join(left)
        running = self._in_flight > 0 and any(
            t.is_alive() for t in getattr(self._executor, "_threads", ())
        )
        if running:
            # A model still in use is not freed under its worker; the process exit does it.
            logger.warning("engine %s: a job is still running at close", self.name)
            return False
        for inst in self._all_instances:
            try:
                inst.close()
            except Exception:
                logger.exception("engine %s failed to close", self.name)
        self._all_instances = []
        return True
