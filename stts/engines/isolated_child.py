"""The child's side of an isolated engine (:mod:`stts.engines.isolated`): load the engine
once, then answer the parent's calls over one pipe until told to stop.

The protocol, one call at a time (the parent never sends the next request before the
answer to the last):

- **Start**: the child sends ``("ready", pid)`` once its model is loaded, else
  ``("unavailable", SttsError)`` or ``("failed", traceback)`` and ends.
- **Requests** (pickled tuples): ``("transcribe", options, send_segments)``,
  ``("open", options)`` (a live stream; answered with its id), ``("accept", id)``,
  ``("finish", id)``, ``("transcript", id)``, ``("close", id)``; ``None`` asks it to stop.
  ``transcribe`` and ``accept`` are followed by their samples, float32 bytes.
- **Answers**: ``("segment", segment)`` as a transcription goes (when asked for), then one
  of ``("done", result)``, ``("error", SttsError)`` (the request's own error, raised as
  is in the parent) or ``("failed", traceback)`` (anything else: 500 in the parent).

The child also ends when the parent's end of the pipe closes, and on Linux when its own
parent, the fork server, goes (:func:`_die_with_parent`).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing.forkserver
import os
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import numpy as np

from stts.engines.base import Engine
from stts.engines.streaming import EngineStream
from stts.errors import Cancelled, SttsError

if TYPE_CHECKING:
    from stts.config import Settings

EngineFactory = Callable[["Settings", str], Engine]
"""Builds the in-process engine a child runs; a module-level function (it is pickled by
name), called with the settings and the model name."""

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent (the fork server) ends.

    The fork server ends when no process holds its "alive" pipe any more. A child
    inherits that pipe's write end (so that it could start processes of its own); this
    one never does, and would otherwise keep the fork server, and so itself, alive
    after the server died.
    """
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(alive_fd, int):
        with contextlib.suppress(OSError):
            os.close(alive_fd)
        server._forkserver_alive_fd = None  # type: ignore[union-attr]
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the request reached the kernel
        os._exit(1)


def serve(conn: Connection, factory: EngineFactory, settings: Settings, model: str) -> None:
    """The child: load the engine once, then answer calls until told to stop or the
    server's end of the pipe closes."""
    _die_with_parent()
    # Ctrl-C reaches the whole process group; the server decides when its children end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        engine = factory(settings, model)
        engine.load()
    except SttsError as exc:
        conn.send(("unavailable", exc))
        return
    except BaseException:
        conn.send(("failed", traceback.format_exc()))
        return
    conn.send(("ready", os.getpid()))

    def send_segment(segment: Any) -> None:
        conn.send(("segment", segment))

    streams: dict[int, EngineStream] = {}
    next_id = 0
    while True:
        try:
            request = conn.recv()
            if request is None:
                break
            kind = request[0]
            samples = (
                np.frombuffer(conn.recv_bytes(), dtype=np.float32)
                if kind in ("transcribe", "accept")
                else None
            )
        except (EOFError, OSError):  # the server is gone
            break
        try:
            result: Any = None
            if kind == "transcribe":
                _, options, segments = request
                result = engine.transcribe(
                    samples,  # type: ignore[arg-type]  # read above for "transcribe"
                    options,
                    on_segment=send_segment if segments else None,
                )
            elif kind == "open":
                next_id += 1
                streams[next_id] = engine.open_stream(request[1])
                result = next_id
            elif kind == "close":
                stream = streams.pop(request[1], None)
                if stream is not None:
                    stream.close()
            else:
                stream = streams.get(request[1])
                if stream is None:
                    raise Cancelled("the stream is closed")
                if kind == "accept":
                    result = stream.accept(samples)  # type: ignore[arg-type]  # read above
                elif kind == "finish":
                    result = stream.finish()
                else:
                    result = stream.transcript()
            answer: tuple[str, Any] = ("done", result)
        except SttsError as exc:
            answer = ("error", exc)
        except Exception:
            answer = ("failed", traceback.format_exc())
        del samples
        try:
            conn.send(answer)
        except (OSError, ValueError):  # the server is gone
            break
    for stream in streams.values():
        with contextlib.suppress(Exception):
            stream.close()
    with contextlib.suppress(Exception):
        engine.close()
