"""Engines in child processes, for native decoders that hold the GIL while they work.

PocketSphinx's ``process_raw`` keeps the GIL for the whole call, so an in-process decode
stops every other thread of the server for its length: the event loop (``/health``,
uploads, job polls), the other engines, Wyoming. Cutting the audio into short pieces
keeps the accuracy but costs twice the CPU (issue 15). An :class:`EngineProcess` runs
one engine instance in a child process of its own instead, so only that child waits.

- **Start**: a ``forkserver`` child (a fresh interpreter forks it, never the server's
  threads), running the fixed :func:`stts.engines.isolated_child.serve` with no user
  input in its arguments. The engine's model is loaded once per child, when it starts.
- **Calls**: one at a time. The options are pickled and the samples go as float32 bytes
  over the same pipe; the child's segments come back as they are ready, then its
  :class:`~stts.transcript.Transcript`.
- **Cancel**: the child is killed at once (SIGKILL) and the next call starts a new one.
  Native code cannot be interrupted between two of its checks; a child can, and it holds
  nothing worth keeping between calls. A timed-out (504), abandoned or stopped request
  frees its worker and CPU now, not at the end of the window under way.
- **Crash**: a child that dies (SIGSEGV, killed) fails that call with
  :class:`~stts.errors.TranscriptionFailed` (500 ``transcription_failed``) and the next
  call starts a fresh child: a crash costs one request, not the server.
- **End**: :meth:`EngineProcess.close` asks the child to stop and kills it after a
  moment. Children end with the server however it ends: on Linux they ask the kernel for
  SIGKILL when their parent (the fork server, which exits when the server does) goes;
  an idle child also stops when its pipe to the server closes; and what is still alive
  at interpreter exit is killed.

- **Streams**: :meth:`EngineProcess.open_stream` opens a live stream in the child (the
  engine's own ``open_stream``, there) and gives back an :class:`IsolatedStream` whose
  steps are calls like the others. Streams of several connections share one child, their
  calls taken in turn (in-process, the GIL took them in turn all the same). A child that
  dies fails the streams it held, each at its next call, and the next stream opened
  starts a fresh child.

Engines use it from their own ``load``/``transcribe``/``open_stream``/``close`` (see
:mod:`stts.engines.pocketsphinx`). This module is the parent's side; the child's, and the
messages the two exchange, are in :mod:`stts.engines.isolated_child`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import numpy as np

from stts.engines.base import CancelToken, SegmentCallback, TranscribeOptions
from stts.engines.isolated_child import EngineFactory, serve
from stts.engines.streaming import EngineStream, StreamUpdate
from stts.errors import (
    Cancelled,
    EngineUnavailable,
    ShuttingDown,
    SttsError,
    TranscriptionFailed,
)
from stts.transcript import Transcript

if TYPE_CHECKING:
    from stts.audio import AudioArray
    from stts.config import Settings

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0
"""Longest a child may take to start and load its model."""
STOP_GRACE_S = 2.0
"""How long :meth:`EngineProcess.close` waits for an idle child to stop by itself."""
_POLL_S = 0.05  # how often a waiting call looks at its CancelToken

_live: weakref.WeakSet[EngineProcess] = weakref.WeakSet()
_live_lock = threading.Lock()


def _context() -> Any:
    return multiprocessing.get_context("forkserver")


def _preload(factory: EngineFactory, settings: Settings) -> list[str]:
    """What the fork server imports once, so that children fork with it imported: this
    module and the child's, the engine's, the settings' (pydantic), and the main module,
    which multiprocessing has every child import again (``stts serve``: the CLI, the app).

    So a script that uses an isolated engine needs the ``if __name__ == "__main__":``
    guard that multiprocessing asks of every program that starts processes."""
    names = ["__main__", __name__, serve.__module__, factory.__module__, type(settings).__module__]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    if isinstance(name, str) and name != "__main__" and not name.endswith(".__main__"):
        names.append(name)
    return names


class EngineProcess:
    """One child process that hosts one engine instance (one per pool worker).

    Not for concurrent calls: the service gives each worker its own instance of an
    engine that is not thread-safe, and each instance its own child.
    """

    def __init__(
        self,
        factory: EngineFactory,
        settings: Settings,
        model: str,
        *,
        name: str,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.model = model
        self.name = name
        self.start_timeout_s = start_timeout_s
        self.starts = 0
        """Children started so far (the first, then one after each kill or crash)."""
        self._process: Any = None
        self._conn: Connection | None = None
        self._closed = False
        self._busy = False
        self._lock = threading.Lock()  # guards _process/_conn against close() from elsewhere
        self._call_lock = threading.Lock()  # one call at a time (streams call from any worker)
        self._pending_closes: list[tuple[int, int]] = []  # (generation, stream id)

    @property
    def pid(self) -> int | None:
        """The live child's process id, or None when there is none now."""
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    # -- life of the child ---------------------------------------------------------

    def start(self) -> float:
        """Start a child and wait until its model is loaded; seconds it took.

        Raises EngineUnavailable if the model fails to load in the child.
        """
        started = time.perf_counter()
        ctx = _context()
        ctx.set_forkserver_preload(_preload(self.factory, self.settings))
        parent_end, child_end = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=serve,
            args=(child_end, self.factory, self.settings, self.model),
            name=f"stts-{self.name}",
            daemon=True,
        )
        with self._lock:
            if self._closed:
                raise ShuttingDown("the engine is closed")
            process.start()
            self._process, self._conn = process, parent_end
            self.starts += 1
        child_end.close()
        with _live_lock:
            _live.add(self)
        try:
            message = self._receive(parent_end, process, None, self.start_timeout_s)
        except TranscriptionFailed as exc:
            self._kill()
            logger.error(
                "the %s worker process failed to start; a script that uses stts must keep "
                "its code under `if __name__ == '__main__':` (multiprocessing imports the "
                "main module again in the child), or set %s.isolate = false",
                self.name,
                self.name,
            )
            raise EngineUnavailable(f"the {self.name} worker process failed to start") from exc
        if message[0] == "failed":
            self._kill()
            logger.error("the %s worker process failed to load: %s", self.name, message[1])
            raise EngineUnavailable(f"the {self.name} model failed to load")
        if message[0] == "unavailable":
            self._kill()
            raise message[1]
        took = time.perf_counter() - started
        logger.info("%s worker process %d ready in %.2f s", self.name, process.pid, took)
        return took

    def close(self, timeout: float = STOP_GRACE_S) -> None:
        """Stop the child (asked first, killed after ``timeout``); no call works afterwards."""
        with self._lock:
            self._closed = True
            process, conn, busy = self._process, self._conn, self._busy
        if process is None:
            return
        if not busy and conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)  # stop when idle
            process.join(timeout)
        self._kill()

    def _kill(self) -> None:
        with self._lock:
            process, conn = self._process, self._conn
            self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(STOP_GRACE_S)
            with contextlib.suppress(ValueError):
                process.close()

    # -- calls -------------------------------------------------------------------

    def transcribe(
        self,
        audio: AudioArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        """The engine's ``transcribe`` in the child; cancel kills the child."""
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        result: Transcript = self._call(
            ("transcribe", options, on_segment is not None), samples, on_segment, cancel
        )
        return result

    def open_stream(self, options: TranscribeOptions) -> IsolatedStream:
        """A live stream opened by the engine in the child (started if there is none)."""
        with self._call_lock:
            self._call_locked(None, None, None, None, start=True)  # a child alive now
            generation = self.starts
            stream_id: int = self._call_locked(("open", options), None, None, None, start=False)
        return IsolatedStream(self, stream_id, generation)

    def stream_call(
        self, generation: int, request: tuple[Any, ...], samples: AudioArray | None = None
    ) -> Any:
        """A call for a stream opened in child number ``generation``: one that died with
        its child fails (TranscriptionFailed), a new child never sees it."""
        with self._call_lock:
            if generation != self.starts or self._process is None:
                raise TranscriptionFailed(
                    f"engine {self.name!r} failed: the worker process that held this stream died"
                )
            return self._call_locked(request, samples, None, None, start=False)

    def close_stream(self, generation: int, stream_id: int) -> None:
        """Close a stream in its child without waiting for another stream's step (it is
        called on the event loop): when a call is under way, the close goes first in the
        next call."""
        if not self._call_lock.acquire(blocking=False):
            self._pending_closes.append((generation, stream_id))
            return
        try:
            self._pending_closes.append((generation, stream_id))
            self._send_closes()
        finally:
            self._call_lock.release()

    def _send_closes(self) -> None:
        while self._pending_closes:
            generation, stream_id = self._pending_closes.pop()
            if generation == self.starts and self._process is not None:
                with contextlib.suppress(SttsError):
                    self._call_locked(("close", stream_id), None, None, None, start=False)

    def _call(
        self,
        request: tuple[Any, ...] | None,
        samples: AudioArray | None,
        on_segment: SegmentCallback | None,
        cancel: CancelToken | None,
        *,
        start: bool = True,
    ) -> Any:
        with self._call_lock:
            return self._call_locked(request, samples, on_segment, cancel, start=start)

    def _call_locked(
        self,
        request: tuple[Any, ...] | None,
        samples: AudioArray | None,
        on_segment: SegmentCallback | None,
        cancel: CancelToken | None,
        *,
        start: bool,
    ) -> Any:
        """Send one request (and its samples) and wait for its answer; ``None`` only
        makes sure a child is running."""
        if self._closed:
            raise EngineUnavailable(f"the {self.name} model is not loaded")
        if cancel is not None and cancel.cancelled:
            raise Cancelled("the request was cancelled")
        if self._process is None and start:  # the first call after a kill or a crash
            self.start()
        if request is None:
            return None
        if request[0] != "close":
            self._send_closes()
        process, conn = self._process, self._conn
        if process is None or conn is None:
            raise ShuttingDown("the engine is closed")
        self._busy = True
        try:
            try:
                conn.send(request)
                if samples is not None:
                    conn.send_bytes(np.ascontiguousarray(samples, dtype=np.float32).data.cast("B"))
            except (OSError, ValueError):  # the child died while idle
                raise self._died(process) from None
            while True:
                message = self._receive(conn, process, cancel, None)
                kind = message[0]
                if kind == "segment" and on_segment is not None:
                    on_segment(message[1])
                elif kind == "done":
                    return message[1]
                elif kind == "error":
                    raise message[1]
                elif kind == "failed":
                    logger.error("%s worker process failed: %s", self.name, message[1])
                    raise TranscriptionFailed(f"engine {self.name!r} failed while transcribing")
        finally:
            self._busy = False

    def _receive(
        self,
        conn: Connection,
        process: Any,
        cancel: CancelToken | None,
        timeout: float | None,
    ) -> tuple[Any, ...]:
        """The child's next message; kills it on cancel, fails if it dies or is late."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                ready = multiprocessing.connection.wait([conn, process.sentinel], _POLL_S)
            except (OSError, ValueError):  # closed from another thread (close())
                raise self._died(process) from None
            if conn in ready:
                try:
                    message: tuple[Any, ...] = conn.recv()
                except (EOFError, OSError):
                    raise self._died(process) from None
                return message
            if ready:  # only the sentinel: the child is gone
                raise self._died(process)
            if cancel is not None and cancel.cancelled:
                self._kill()
                raise Cancelled("the request was cancelled")
            if self._closed:
                self._kill()
                raise ShuttingDown("the engine was closed during the call")
            if deadline is not None and time.monotonic() > deadline:
                self._kill()
                raise TranscriptionFailed(f"the {self.name} worker process did not answer")

    def _died(self, process: Any) -> SttsError:
        pid = process.pid
        process.join(STOP_GRACE_S)
        code = process.exitcode
        self._kill()
        if self._closed:
            return ShuttingDown("the engine was closed during the call")
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        logger.error(
            "%s worker process %s died (%s); the next call starts a new one", self.name, pid, how
        )
        return TranscriptionFailed(f"engine {self.name!r} failed while transcribing")


class IsolatedStream(EngineStream):
    """The parent's side of a live stream that an engine decodes in a child process."""

    def __init__(self, host: EngineProcess, stream_id: int, generation: int) -> None:
        self.host = host
        self.stream_id = stream_id
        self.generation = generation  # which child holds it (EngineProcess.starts)
        self._closed = False

    def accept(self, samples: AudioArray) -> StreamUpdate:
        """The engine stream's ``accept``, in the child."""
        update: StreamUpdate = self._call("accept", samples)
        return update

    def finish(self) -> StreamUpdate:
        """The engine stream's ``finish``, in the child."""
        update: StreamUpdate = self._call("finish")
        return update

    def transcript(self) -> Transcript:
        """The engine stream's ``transcript``, from the child."""
        result: Transcript = self._call("transcript")
        return result

    def close(self) -> None:
        """Close it in the child (now, or first in the next call while another stream's
        step runs); nothing to do once that child is gone."""
        if self._closed:
            return
        self._closed = True
        self.host.close_stream(self.generation, self.stream_id)

    def _call(self, kind: str, samples: AudioArray | None = None) -> Any:
        if self._closed:
            raise Cancelled("the stream is closed")
        return self.host.stream_call(self.generation, (kind, self.stream_id), samples)


@atexit.register
def _kill_all() -> None:
    """Kill children still alive at interpreter exit (close() was not reached)."""
    with _live_lock:
        hosts = list(_live)
    for host in hosts:
        with contextlib.suppress(Exception):
            host._closed = True
            host._kill()
