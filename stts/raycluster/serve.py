"""``stts serve --ray``: the same FastAPI app as a Ray Serve deployment.

Each replica builds its own app with :func:`stts.server.build_app`: its own engine
manager, model, admission limits and metrics, so ``/health``, ``/ready`` and ``/metrics``
describe the replica that answered (the ``X-Stts-Replica`` header names it). A replica
loads the default engine before Serve routes anything to it. Ray Serve's HTTP proxy
spreads requests over the replicas and replaces one whose process dies.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ray import serve

from stts.raycluster import connect

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from stts.config import Settings

__all__ = ["APP_NAME", "REPLICA_HEADER", "Scaling", "SttsReplica", "run"]

logger = logging.getLogger(__name__)

APP_NAME = "stts"
REPLICA_HEADER = "x-stts-replica"
# Requests a replica takes at once beyond its engine's own places: /health, /ready and
# /metrics must still reach a replica whose engine queue is full.
_CONTROL_REQUESTS = 8


@dataclass(frozen=True, slots=True)
class Scaling:
    """How many replicas: a fixed number, or Serve's autoscaling between two bounds."""

    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float | None = None
    cpus_per_replica: float = 1.0

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        options: dict[str, Any] = {"ray_actor_options": {"num_cpus": self.cpus_per_replica}}
        if self.max_replicas is None:
            options["num_replicas"] = self.replicas
            return options
        autoscaling: dict[str, Any] = {
            "min_replicas": self.min_replicas if self.min_replicas is not None else 1,
            "max_replicas": self.max_replicas,
            "initial_replicas": self.replicas,
        }
        if self.target_ongoing_requests is not None:
            autoscaling["target_ongoing_requests"] = self.target_ongoing_requests
        options["autoscaling_config"] = autoscaling
        return options


class _ReplicaHeader:
    """Names the replica on every HTTP answer, so a client or a test can tell them apart."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app = app
        self.replica = replica.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-stts-replica", self.replica),
                ]
            await send(message)

        await self.app(scope, receive, named)


@serve.ingress()
class SttsReplica:
    """One replica: the whole stts app over its own engine manager."""

    def __init__(self, settings: Settings) -> None:
        from stts.memory import limit_malloc_arenas
        from stts.server import build_app

        limit_malloc_arenas(settings.malloc_arena_max)
        self.stts_app = build_app(settings)
        # Serve routes to a replica once its constructor returns: load the model first.
        self.stts_app.state.manager.preload()
        self.replica = serve.get_replica_context().replica_id.unique_id

    def __serve_build_asgi_app__(self) -> ASGIApp:
        return _ReplicaHeader(self.stts_app, self.replica)

    def check_health(self) -> None:
        """Serve restarts a replica whose engine manager was closed under it."""
        if self.stts_app.state.manager.closed and not self.stts_app.state.stop.draining:
            raise RuntimeError("the engine manager is closed")


def run(address: str, settings: Settings, scaling: Scaling) -> None:
    """Deploy stts on the cluster at ``address`` with Serve's proxy on ``settings.host``
    and ``settings.port``, and keep it up until SIGINT or SIGTERM; then delete it."""
    if settings.wyoming_uri:
        # Every replica would bind the same Wyoming port; Serve proxies HTTP only.
        logger.warning("Wyoming is not served under Ray Serve: run it on a plain `stts serve`")
        settings = settings.model_copy(update={"wyoming_uri": None})
    connect(address)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    engine = settings.engine_settings(settings.default_engine)
    deployment = serve.deployment(SttsReplica).options(  # type: ignore[attr-defined]
        name="SttsReplica",
        max_ongoing_requests=engine.workers + engine.queue_size + _CONTROL_REQUESTS,
        graceful_shutdown_timeout_s=settings.shutdown_grace_s + 5,
        **scaling.deployment_options(),
    )
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        serve.run(deployment.bind(settings), name=APP_NAME, route_prefix="/", blocking=False)
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        serve.delete(APP_NAME)
