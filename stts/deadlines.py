"""How long a request waits on its engine job, and the graceful stop that cuts waits short.

A job is waited for in phases: a free worker (``queue_timeout_s``, then Overloaded), the
model's load (not counted), the engine's work (the request's deadline, then
TranscriptionTimeout). :meth:`JobWaits.abort` answers every wait still open ShuttingDown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, TypeVar

from stts.config import Settings
from stts.engines.base import CancelToken
from stts.errors import Overloaded, SttsError, TranscriptionTimeout
from stts.slots import SHUTDOWN_RETRY_AFTER_S, job_clock, shutting_down

T = TypeVar("T")


class JobWaits:
    """Waits on engine jobs, blocking or with ``await``, under the same deadlines."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Set when the graceful stop's deadline passes: every request still waiting on an
        # engine is answered ShuttingDown and its engine job is cancelled.
        self._aborted = threading.Event()
        self._abort_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._abort_lock = threading.Lock()

    @property
    def aborted(self) -> bool:
        """True once :meth:`abort` was called."""
        return self._aborted.is_set()

    def abort(self) -> None:
        """Answer every waiting request ShuttingDown now and cancel its engine job."""
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
        """Wait for one engine job without blocking the loop (see
        :meth:`stts.service.EngineManager.await_job`)."""
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
                    give_up(future, cancel)
                    raise
                if wrapped in done:
                    return wrapped.result()
                if aborted in done or not done:
                    give_up(future, cancel)
                    wrapped.cancel()  # nobody reads what the job still ends with
                    if aborted in done:
                        raise shutting_down("the server is shutting down; the request was stopped")
                    raise _late(phase, limit)
        raise AssertionError("unreachable: the last phase ends with the job or a limit")

    def wait_job(self, future: Future[T], cancel: CancelToken, timeout: float) -> T:
        """Blocking :meth:`await_job` (CLI and library), with the same deadlines."""
        for phase, point, limit in self._phases(future, timeout):
            waiting: list[Future[Any]] = [future] if point is None else [future, point]
            concurrent.futures.wait(waiting, timeout=limit, return_when="FIRST_COMPLETED")
            if future.done():
                return future.result()
            if point is None or not point.done():
                give_up(future, cancel)
                raise _late(phase, limit)
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


def give_up(future: Future[Any], cancel: CancelToken) -> None:
    """Stop a job nobody waits for any more."""
    cancel.cancel()  # a running engine stops at its next segment
    future.cancel()  # a queued job never starts


def _late(phase: str, limit: float | None) -> SttsError:
    if phase == "queue":
        return Overloaded(
            f"no worker was free within {limit:g} s (queue_timeout_s); retry later",
            retry_after=SHUTDOWN_RETRY_AFTER_S,
        )
    return TranscriptionTimeout(
        f"transcription took longer than {limit or 0.0:.0f} s and was stopped"
    )


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
