"""``stts serve``: the HTTP server (and Wyoming beside it), or a Ray Serve deployment."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from stts.cli.common import ConfigOpt, exit_on_error, load_settings


def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    engines_opt: Annotated[
        str | None, typer.Option("--engines", help="comma-separated engines to offer")
    ] = None,
    default_engine: Annotated[
        str | None, typer.Option(help="engine used when a request names none")
    ] = None,
    wyoming: Annotated[
        str | None,
        typer.Option(
            "--wyoming",
            help="also serve the Wyoming protocol (Home Assistant) at tcp://host:port "
            "or unix:///path",
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="run as a Ray Serve deployment on this cluster (host:port, 'auto' or "
            "'local'); needs stts-server[ray]",
        ),
    ] = None,
    replicas: Annotated[
        int, typer.Option(help="with --ray: replicas (initial ones when autoscaling)", min=1)
    ] = 1,
    min_replicas: Annotated[
        int | None, typer.Option(help="with --ray and --max-replicas: autoscaling floor", min=0)
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option(help="with --ray: autoscale up to this many replicas", min=1)
    ] = None,
    target_ongoing_requests: Annotated[
        float | None,
        typer.Option(help="with --ray --max-replicas: requests per replica to scale at", min=0.1),
    ] = None,
    cpus_per_replica: Annotated[
        float, typer.Option(help="with --ray: CPUs each replica reserves", min=0.01)
    ] = 1.0,
    config: ConfigOpt = None,
) -> None:
    """Run the HTTP server (OpenAI-compatible /v1 and the legacy /api routes)."""
    if ray_address is not None:
        _serve_on_ray(
            ray_address,
            config,
            {"host": host, "port": port, "engines": engines_opt, "default_engine": default_engine},
            (replicas, min_replicas, max_replicas, target_ongoing_requests, cpus_per_replica),
        )
        return

    from stts.api.app import server_config
    from stts.memory import limit_malloc_arenas
    from stts.server import build_app

    with exit_on_error():
        settings = load_settings(
            config,
            host=host,
            port=port,
            engines=engines_opt,
            default_engine=default_engine,
            wyoming_uri=wyoming,
        )
        limit_malloc_arenas(settings.malloc_arena_max)  # before any worker thread exists
        application = build_app(settings)
    config_ = server_config(application, settings)
    server = _draining_server_class()(config_, application)
    server.run()
    if application.state.workers_left:
        # An engine call that cannot be interrupted outlived the grace period; its
        # request was answered already. Waiting for it would break shutdown_grace_s.
        logging.shutdown()
        os._exit(0)
    raise typer.Exit(0)


def _serve_on_ray(
    address: str,
    config: Path | None,
    overrides: dict[str, Any],
    scaling: tuple[int, int | None, int | None, float | None, float],
) -> None:
    """``stts serve --ray``: the app as a Ray Serve deployment, until SIGINT/SIGTERM."""
    with exit_on_error():
        from stts.raycluster.serve import Scaling, run

        settings = load_settings(config, **overrides)
        run(address, settings, Scaling(*scaling))


def _draining_server_class() -> Any:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn, but SIGTERM first flips the app to draining: new requests get 503."""

        def __init__(self, config: uvicorn.Config, application: object) -> None:
            super().__init__(config)
            self.application = application

        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            # uvicorn closes every connection at once here (WebSockets with 1012); live
            # sessions get shutdown_grace_s like requests do: the app ends them at the
            # abort (an error event, then a close), uvicorn's own timeout is the backstop.
            live = {
                c
                for c in self.server_state.connections
                if type(c).__module__.startswith("uvicorn.protocols.websockets")
            }
            self.server_state.connections.difference_update(live)
            await super().shutdown(sockets)

        def handle_exit(self, sig: int, frame: object) -> None:
            self.application.state.stop.request()  # type: ignore[attr-defined]
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            # A drained SIGTERM is a clean stop: exit 0 instead of re-raising the signal.
            if sig == signal.SIGTERM:
                self._captured_signals = [s for s in self._captured_signals if s != sig]

    return DrainingServer
