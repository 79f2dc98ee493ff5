"""The graceful stop of the HTTP face: drain, then answer what is left before the deadline.

On SIGTERM (``stts serve``) :meth:`GracefulStop.request` is called:

1. at once, new requests get 503 ``shutting_down`` with ``Retry-After`` and the engine
   manager admits nothing new; requests under way go on;
2. when ``shutdown_grace_s`` has passed, the manager aborts what is still waiting on an
   engine (its routes answer 503 ``shutting_down`` in JSON, an SSE stream ends with an
   ``error`` event, engine jobs are cancelled at their next segment); a request still
   not answered a moment later (an upload still arriving, say) is cut off here with the
   same JSON 503 instead of uvicorn's plain-text 500.

uvicorn's own ``timeout_graceful_shutdown`` is set past this deadline, so it is only a
backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stts.api.edge import deny
from stts.service import EngineManager, shutting_down

logger = logging.getLogger(__name__)

ABORT_ANSWER_S = 0.5
"""How long routes get, after the abort, to answer for themselves before being cut off."""


class GracefulStop:
    """Draining state of one app; :meth:`request` may be called from a signal handler."""

    def __init__(self, manager: EngineManager, grace_s: float, *, owns_manager: bool) -> None:
        self.manager = manager
        self.grace_s = grace_s
        # A manager shared with other apps (tests, an embedding program) is not drained
        # or aborted by this app's stop: only this app's own requests are.
        self.owns_manager = owns_manager
        self.draining = False
        self.aborted = False
        self.deadline: float | None = None  # time.monotonic() when the grace period ends
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aborted: asyncio.Event | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the server's event loop (at start-up)."""
        self._loop = loop
        self._aborted = asyncio.Event()

    def request(self) -> None:
        """Start draining; thread- and signal-safe."""
        if self._loop is None:
            self._begin()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to drain
            self._loop.call_soon_threadsafe(self._begin)

    def _begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        self.deadline = time.monotonic() + self.grace_s
        if self.owns_manager:
            self.manager.drain()
        logger.info("graceful stop: draining for up to %.1f s", self.grace_s)
        if self._loop is not None:
            self._loop.call_later(self.grace_s, self.abort)

    def abort(self) -> None:
        """The grace period is over: stop whatever is still under way."""
        if self.aborted:
            return
        self.aborted = True
        if self.deadline is not None and time.monotonic() < self.deadline:
            # Called at the end of the app's life: everything finished in time.
            left = self.remaining()
            logger.info("graceful stop: done with %.1f s of the grace period left", left)
        else:
            logger.info("graceful stop: grace period over, stopping requests under way")
        if self.owns_manager:
            self.manager.abort()
        if self._aborted is not None:
            self._aborted.set()

    def remaining(self) -> float:
        """Seconds left of the grace period (the full period before a stop is requested)."""
        if self.deadline is None:
            return self.grace_s
        return max(0.0, self.deadline - time.monotonic())

    async def wait_aborted(self) -> None:
        """Return once :meth:`abort` has run (never, when not attached to a loop: an app
        run without its lifespan has no graceful stop)."""
        if self._aborted is None:
            await asyncio.Event().wait()
        else:
            await self._aborted.wait()


class DrainGuard:
    """503 + Retry-After for new requests while draining; a JSON 503 for requests that are
    still unanswered after the abort (never uvicorn's plain-text 500).

    WebSocket handshakes too: refused with the 503 before the upgrade while draining; an
    open session answers the abort itself (an ``error`` event and a close) and is cut off
    here if it has not ended shortly afterwards.
    """

    def __init__(self, app: ASGIApp, stop: GracefulStop) -> None:
        self.app = app
        self.stop = stop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        if self.stop.draining:
            await deny(shutting_down(), scope, receive, send)
            return
        if self.stop._aborted is None:  # not attached to a loop (no lifespan): pass through
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] in (
                "http.response.start",
                "websocket.accept",
                "websocket.http.response.start",
                "websocket.close",
            ):
                started = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, tracking_send))
        aborted = asyncio.ensure_future(self.stop.wait_aborted())
        try:
            await asyncio.wait({task, aborted}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                # Routes answer the abort themselves (JSON 503, a stream's error event);
                # whatever has not done so shortly afterwards is cut off here.
                await asyncio.wait({task}, timeout=ABORT_ANSWER_S)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            aborted.cancel()
        if task.done():
            task.result()  # re-raise what the app raised, as without this middleware
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        if not started:
            error = shutting_down("the server is shutting down; the request was stopped")
            await deny(error, scope, receive, send)
