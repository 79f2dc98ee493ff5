"""Live streams on one engine slot: how many may be open, and which instance holds each.

A live stream is admitted on its slot before it opens (at most ``<engine>.max_streams``
at once; Overloaded, 503, beyond that) and counts until it ends. On an engine with one
instance per worker (not thread-safe), a stream stays on the instance that opened it
(its decoder, or the child process that holds it) while its steps run on whichever
worker is free; :class:`StreamHomes` opens each stream on the instance that holds the
fewest, so the streams of a 2-worker engine do not land on one instance, one core.

The counts share the slot's admission lock: the slot's idle unload reads them with its
own under that lock, so no stream is admitted while a model is being freed.
"""

from __future__ import annotations

import threading

from stts.engines.base import Engine, TranscribeOptions
from stts.engines.streaming import EngineStream
from stts.errors import Overloaded

STREAM_RETRY_AFTER_S = 5
"""Retry-After when an engine has all the live streams it may have open."""


class StreamHomes:
    """The live streams of one slot: their count (``open``, at most ``max_streams``) and
    the instance each one lives on.

    Counting (:meth:`admit`, :meth:`count_out`, :meth:`clear`) is done under the slot's
    admission lock, which the slot holds; placing (:meth:`open_on`, :meth:`closed`) takes
    that lock itself.
    """

    def __init__(self, engine: str, max_streams: int, lock: threading.Lock) -> None:
        self.engine = engine
        self.max_streams = max_streams
        self.open = 0
        self.opened = 0  # streams admitted, for reporting
        self.homes: dict[int, int] = {}  # id(instance) -> its open streams
        self._stream_home: dict[int, int] = {}  # id(engine stream) -> id(its instance)
        self._lock = lock

    def admit(self) -> bool:
        """Count one more open stream; False, counting nothing, when ``max_streams`` are
        open (the caller holds the slot's lock)."""
        if self.open >= self.max_streams:
            return False
        self.open += 1
        self.opened += 1
        return True

    def refusal(self) -> Overloaded:
        """The error for a stream that :meth:`admit` did not count."""
        return Overloaded(
            f"engine {self.engine!r} has {self.max_streams} live streams open, its limit; "
            "retry later",
            retry_after=STREAM_RETRY_AFTER_S,
        )

    def count_out(self) -> None:
        """A stream ended (the caller holds the slot's lock)."""
        self.open -= 1

    def clear(self) -> None:
        """Forget every home: the instances are being freed (the caller holds the slot's
        lock, and no stream is open: each was counted out, or is stuck)."""
        self.homes.clear()
        self._stream_home.clear()

    def open_on(
        self, engine: Engine, instances: list[Engine] | None, options: TranscribeOptions
    ) -> EngineStream:
        """Open a stream on the one of ``instances`` that holds the fewest, or on
        ``engine`` (the worker's) when the engine is shared (``instances`` None).

        ``open_stream`` keeps nothing on the instance (the engine contract), so it may run
        on one another worker has checked out.
        """
        home = engine
        if instances is not None:
            with self._lock:
                home = min(instances, key=lambda i: self.homes.get(id(i), 0))
                self.homes[id(home)] = self.homes.get(id(home), 0) + 1
        try:
            stream = home.open_stream(options)
        except BaseException:
            self._leave_home(id(home))
            raise
        if instances is not None:
            with self._lock:
                self._stream_home[id(stream)] = id(home)
        return stream

    def closed(self, stream: EngineStream) -> None:
        """An engine stream opened by :meth:`open_on` was closed: its home holds one less."""
        with self._lock:
            home = self._stream_home.pop(id(stream), None)
        if home is not None:
            self._leave_home(home)

    def _leave_home(self, home: int) -> None:
        with self._lock:
            left = self.homes.get(home, 0) - 1
            if left > 0:
                self.homes[home] = left
            else:
                self.homes.pop(home, None)
