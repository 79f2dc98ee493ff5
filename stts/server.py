"""The composition root: the whole service put together.

Each face stands alone: the HTTP app (:mod:`stts.api.app`), the web page
(:mod:`stts.web`) and the Wyoming server (:mod:`stts.wyoming`) never import one
another. This module is the one place that knows all of them; :func:`build_app` is
what ``stts serve``, the Ray Serve replicas and the tests run.
"""

from __future__ import annotations

from fastapi import FastAPI

from stts.api.app import Companion, CompanionFactory, Routes, create_app
from stts.config import Settings
from stts.errors import RequestTooLarge
from stts.metrics import Metrics
from stts.service import EngineManager

__all__ = ["build_app"]


def _web_page() -> Routes:
    from stts.web.router import RENDER_MAX_BYTES, RENDER_PATH, router

    too_large = RequestTooLarge(
        f"the transcript to render is larger than the limit of {RENDER_MAX_BYTES} bytes"
    )
    return Routes(router, {RENDER_PATH: (RENDER_MAX_BYTES, too_large)})


def _wyoming(settings: Settings) -> CompanionFactory:
    from stts.wyoming import WyomingServer  # says how to install `wyoming` when it's absent

    uri = settings.wyoming_uri
    assert uri is not None

    def make(manager: EngineManager, metrics: Metrics) -> Companion:
        return WyomingServer(
            uri,
            manager,
            settings.audio.limits(),
            metrics.observe_wyoming,
            allow=settings.wyoming_allow,
        )

    return make


def _server_defaults(settings: Settings) -> Settings:
    """What a server wants that a script does not: PocketSphinx decoding in child
    processes (it holds the GIL for a whole decode) unless the operator said otherwise."""
    if settings.pocketsphinx.isolate is not None:
        return settings
    section = settings.pocketsphinx.model_copy(update={"isolate": True})
    return settings.model_copy(update={"pocketsphinx": section})


def build_app(settings: Settings | None = None, manager: EngineManager | None = None) -> FastAPI:
    """The HTTP app with the faces the settings turn on: the web page (``web_ui``) and the
    Wyoming server on the same event loop and engine manager (``wyoming_uri``). A
    ``manager`` given keeps its own settings (``pocketsphinx.isolate`` included)."""
    settings = _server_defaults(settings or Settings.load())
    routes = [_web_page()] if settings.web_ui else []
    companions = [_wyoming(settings)] if settings.wyoming_uri else []
    app = create_app(settings, manager, routes=routes, companions=companions)
    app.state.wyoming = app.state.companions[0] if companions else None
    return app
