"""Live streams in the service layer: what every streaming face (realtime WebSocket,
Wyoming) shares.

A :class:`LiveStream` is one utterance transcribed while it is spoken. The service owns
it like it owns a request:

- it is admitted on its engine's slot before it starts (``<engine>.max_streams``;
  Overloaded, 503, beyond that), and counts until it is closed;
- its decode steps run on the engine's worker pool, never on the event loop, queued
  first come first served with whole requests, so files and streams share the CPU;
- audio that arrives while a step runs waits in a backlog bounded in seconds
  (``streaming.max_backlog_s``): a client sending faster than the engine keeps up gets
  an error, never unbounded memory; a stream is bounded in length too
  (``streaming.max_duration_s``);
- the graceful stop's abort ends it (ShuttingDown) like any request.

Faces push 16 kHz mono float32 with :meth:`LiveStream.push`, read
:class:`~stts.engines.streaming.StreamUpdate` objects from :meth:`LiveStream.updates`,
and end the utterance with :meth:`LiveStream.finish` (or drop it with ``close``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import numpy as np

from stts.audio import SAMPLE_RATE, AudioArray
from stts.engines.base import CancelToken, Engine, TranscribeOptions
from stts.engines.streaming import EngineStream, StreamUpdate
from stts.errors import AudioTooLong, Overloaded, SttsError
from stts.service import EngineManager, SlotKey, shutting_down
from stts.slots import EngineSlot
from stts.transcript import Transcript

logger = logging.getLogger(__name__)

_STEP_TIMEOUT_S = 120.0
"""A single decode step that takes longer than this is stopped (a stuck engine)."""


def _close_unclaimed(slot: EngineSlot, future: concurrent.futures.Future[EngineStream]) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    stream = future.result()
    try:
        stream.close()
    except Exception:
        logger.exception("an engine failed to close a stream nobody claimed")
    slot.stream_closed(stream)


class LiveStream:
    """One utterance transcribed as it arrives; use :meth:`open`, then ``async with``."""

    def __init__(
        self,
        manager: EngineManager,
        slot: EngineSlot,
        engine_stream: EngineStream,
        *,
        max_duration_s: float,
        max_backlog_s: float,
    ) -> None:
        self.manager = manager
        self.slot = slot
        self.key: SlotKey = (slot.name, slot.model)
        self._engine = engine_stream
        self.max_samples = int(max_duration_s * SAMPLE_RATE)
        self.max_backlog = int(max_backlog_s * SAMPLE_RATE)
        self.received = 0  # samples pushed
        self.decoded = 0  # samples the engine has taken
        self.cancel = CancelToken()
        self.error: SttsError | None = None
        self.closed = False
        self._pending: list[AudioArray] = []
        self._step: asyncio.Task[None] | None = None
        self._future: concurrent.futures.Future[StreamUpdate] | None = None
        self._updates: asyncio.Queue[StreamUpdate | None] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()

    @classmethod
    async def open(
        cls, manager: EngineManager, key: SlotKey, options: TranscribeOptions
    ) -> LiveStream:
        """Admit and open a stream on an engine (Overloaded when it has all it may have)."""
        if manager.draining:
            raise shutting_down()
        slot = manager.slot(key)
        slot.reserve_stream()
        try:
            future = slot.submit_open_stream(options)
        except BaseException:
            slot.release_stream()
            raise
        try:
            engine_stream = await manager.await_job(future, CancelToken(), _STEP_TIMEOUT_S)
        except BaseException:
            slot.release_stream()
            # The opener left (or the stop ran out of time) while the engine was still
            # opening: the stream it opens is closed when it is ready, never leaked.
            future.add_done_callback(functools.partial(_close_unclaimed, slot))
            raise
        limits = manager.settings.streaming
        return cls(
            manager,
            slot,
            engine_stream,
            max_duration_s=limits.max_duration_s,
            max_backlog_s=limits.max_backlog_s,
        )

    async def __aenter__(self) -> LiveStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def backlog_s(self) -> float:
        """Seconds of audio received and not yet decoded."""
        return (self.received - self.decoded) / SAMPLE_RATE

    def push(self, samples: AudioArray) -> None:
        """Queue the next piece of 16 kHz mono audio; never blocks."""
        if not len(samples):
            return
        if self.error is not None:
            raise self.error
        if self.closed:
            raise shutting_down("the stream is closed")
        if self.received + len(samples) > self.max_samples:
            self.error = AudioTooLong(
                f"the stream is longer than the limit of {self.max_samples / SAMPLE_RATE:g} s"
            )
            raise self.error
        if self.received + len(samples) - self.decoded > self.max_backlog:
            self.error = Overloaded(
                "audio arrives faster than it can be transcribed: more than "
                f"{self.max_backlog / SAMPLE_RATE:g} s are waiting",
                retry_after=1,
            )
            raise self.error
        self.received += len(samples)
        self._pending.append(np.asarray(samples, dtype=np.float32))
        self._kick()

    def _kick(self) -> None:
        if self._step is None and self._pending and self.error is None:
            self._idle.clear()
            self._step = asyncio.ensure_future(self._run_steps())

    async def _run_steps(self) -> None:
        try:
            while self._pending and self.error is None and not self.closed:
                chunk = np.concatenate(self._pending)
                self._pending = []
                update = await self._call(functools.partial(self._accept, chunk))
                self.decoded += len(chunk)
                self._updates.put_nowait(update)
        except SttsError as exc:
            self.error = exc
            self._updates.put_nowait(None)
        finally:
            self._step = None
            self._idle.set()

    def _accept(self, chunk: AudioArray, _engine: Engine) -> StreamUpdate:
        return self._engine.accept(chunk)

    async def _call(self, job: Callable[[Engine], StreamUpdate]) -> StreamUpdate:
        future = self._future = self.slot.submit_step(job, self.cancel)
        return await self.manager.await_job(future, self.cancel, _STEP_TIMEOUT_S)

    async def updates(self) -> AsyncIterator[StreamUpdate]:
        """Updates as the engine produces them; ends when the stream fails or closes."""
        while True:
            update = await self._updates.get()
            if update is None:
                if self.error is not None:
                    raise self.error
                return
            yield update

    def drain_updates(self) -> list[StreamUpdate]:
        """Updates produced and not yet read (without waiting)."""
        out = []
        while not self._updates.empty():
            update = self._updates.get_nowait()
            if update is not None:
                out.append(update)
        return out

    async def finish(self) -> tuple[StreamUpdate, Transcript]:
        """No more audio: wait for what is queued, commit the rest; the last update and
        the whole transcript (whose text is every committed word joined)."""
        await self._idle.wait()
        if self.error is not None:
            raise self.error
        last = await self._call(lambda _engine: self._engine.finish())
        transcript = replace(self._engine.transcript(), engine=self.key[0], model=self.key[1])
        return last, transcript

    async def close(self) -> None:
        """End the stream (finished or not) and give its place back; idempotent."""
        if self.closed:
            return
        self.closed = True
        self.cancel.cancel()
        self._updates.put_nowait(None)
        if self._step is not None:
            self._step.cancel()
        if self._future is not None and not self._future.done():
            # A step still running on a worker owns the engine stream until it returns.
            await asyncio.wait({asyncio.wrap_future(self._future)}, timeout=_STEP_TIMEOUT_S)
        if self._future is not None and not self._future.done():
            # Stuck in native code: closing the engine stream under it could corrupt its
            # memory. It is closed when the step returns (the place is given back now).
            logger.warning("engine %s: a stream step is still running at close", self.key[0])
            self._future.add_done_callback(lambda _f: self._close_engine())
        else:
            self._close_engine()
        self.slot.release_stream()

    def _close_engine(self) -> None:
        try:
            self._engine.close()
        except Exception:
            logger.exception("engine %s failed to close a stream", self.key[0])
        self.slot.stream_closed(self._engine)
