"""The Wyoming protocol face: Home Assistant's voice pipeline talks to stts directly.

`Wyoming <https://github.com/OHF-Voice/wyoming>`_ is a small event protocol (a JSON line,
optional JSON data, optional binary payload per event). An ASR service answers:

- ``describe`` with ``info``: one ASR program, ``stts``, whose models are the same ids as
  ``/v1/models`` (``whisper``, ``whisper:base``, ``pocketsphinx``, ...), each with its
  languages;
- ``transcribe`` (optional model ``name`` and ``language``), then ``audio-start``,
  ``audio-chunk``... , ``audio-stop`` with ``transcript``, or with ``error`` when the
  audio or the request is bad, the queue is full, or every engine failed. The connection
  stays open for the next utterance either way.

With ``streaming.wyoming`` on, an utterance on an engine that streams (PocketSphinx,
Vosk, Whisper) is transcribed while it arrives, as Wyoming 1.7's transcript streaming
has it (``info`` says ``supports_transcript_streaming``): each audio chunk goes into a
:class:`~stts.streams.LiveStream` at once, and the answer is ``transcript-start``, a
``transcript-chunk`` for each piece of committed text (final: the chunks joined are the
transcript), then at ``audio-stop`` the last chunk, the whole ``transcript`` and
``transcript-stop``. An utterance that meets an error after ``transcript-start`` gets its
``error`` and then ``transcript-stop``. With no stream place free on the engine
(``max_streams``), or on an engine that can't stream, the utterance is answered whole.

The PCM that the chunks carry (any rate, 16- or 32-bit, any channel count) goes through
the same edge as every HTTP request: :func:`stts.audio.decode_audio` turns it into 16 kHz
mono float32 once (a streamed utterance: chunk by chunk, the same arithmetic), then the
shared :class:`~stts.service.EngineManager` schedules it with the same queues, deadlines
and fallback. Memory per connection is bounded: events are read
with limits on their data and payload (the ``wyoming`` package's own reader has none), and
an utterance longer than ``audio.max_duration_s`` or ``audio.max_bytes`` is refused.

It runs on the HTTP server's event loop when ``wyoming_uri`` is set
(``stts serve --wyoming tcp://0.0.0.0:10300``), so both faces share one loaded model.
Needs the ``wyoming`` extra: ``pip install 'stts-server[wyoming]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from stts import __version__
from stts.audio import AudioLimits
from stts.catalogue import engine_model_ids, resolve_model
from stts.engines.registry import get_engine_class
from stts.errors import ConfigError, SttsError
from stts.install import install_hint
from stts.languages import LANGUAGE_NAMES
from stts.service import EngineManager
from stts.wyoming.session import WyomingSession, streams_on_wyoming
from stts.wyoming.wire import MAX_DATA_BYTES, ProtocolError, read_event

__all__ = [
    "ClientNotAllowed",
    "ProtocolError",
    "WyomingServer",
    "WyomingSession",
    "available",
    "build_info",
    "read_event",
    "streams_on_wyoming",
    "wyoming_languages",
]

logger = logging.getLogger(__name__)

_REFUSAL_LINGER_S = 5.0
"""How long a refused client's events are read (and dropped) before its socket closes."""

_UPSTREAM = {  # engine -> (who made it, where it's from), for the info event's attribution
    "whisper": ("OpenAI Whisper, via faster-whisper", "https://github.com/SYSTRAN/faster-whisper"),
    "pocketsphinx": ("CMU PocketSphinx", "https://github.com/cmusphinx/pocketsphinx"),
    "vosk": ("Alpha Cephei Vosk", "https://alphacephei.com/vosk"),
    "wav2vec2": ("wav2vec 2.0 CTC, via ONNX Runtime", "https://onnxruntime.ai"),
}


def available() -> bool:
    """True when the ``wyoming`` package is installed."""
    return importlib.util.find_spec("wyoming") is not None


def wyoming_languages(manager: EngineManager, name: str) -> list[str]:
    """Languages to advertise for an engine: the ones its default model really decodes
    (Whisper base: 99, large-v3: 100), as the HTTP faces accept them."""
    engine_cls = get_engine_class(name)
    caps = engine_cls(manager.settings).capabilities  # read from files: nothing is loaded
    if caps.languages is None:
        return list(LANGUAGE_NAMES)
    return sorted(caps.languages)


def build_info(manager: EngineManager) -> Any:
    """The ``info`` event's content: one ASR program with every servable model."""
    from wyoming.info import AsrModel, AsrProgram, Attribution, Info

    models = []
    streaming = False
    for model_id in engine_model_ids(manager):  # aliases (whisper-1) are the HTTP API's
        engine = model_id.partition(":")[0]
        streaming = streaming or streams_on_wyoming(manager, resolve_model(manager, model_id))
        models.append(
            AsrModel(
                name=model_id,
                attribution=Attribution(*_UPSTREAM.get(engine, (engine, ""))),
                installed=True,
                description=f"stts engine {engine}",
                version=None,
                languages=wyoming_languages(manager, engine),
            )
        )
    program = AsrProgram(
        name="stts",
        attribution=Attribution(name="stts", url=""),
        installed=True,
        description="stts: offline speech-to-text",
        version=__version__,
        models=models,
        # One program for every model: it streams when any of its models does (the
        # others answer with one transcript, which streaming clients accept too).
        supports_transcript_streaming=streaming,
    )
    return Info(asr=[program])


async def _read_to_end(reader: asyncio.StreamReader) -> None:
    """Read and drop what the peer sends until it closes."""
    while await reader.read(MAX_DATA_BYTES):
        pass


class ClientNotAllowed(SttsError):
    """A Wyoming client whose address ``wyoming_allow`` does not list."""

    status_code = 403
    error_type = "permission_error"
    code = "client_not_allowed"


class WyomingServer:
    """The listener: one :class:`WyomingSession` task per connection."""

    def __init__(
        self,
        uri: str,
        manager: EngineManager,
        limits: AudioLimits | None = None,
        on_result: Callable[[str], None] | None = None,
        *,
        allow: Sequence[str] | None = None,
    ) -> None:
        if not available():
            raise ConfigError(
                "wyoming_uri is set but the wyoming package is missing: " + install_hint("wyoming")
            )
        self.uri = uri
        self._address = urlsplit(uri)  # checked by Settings: tcp://host:port or unix:///path
        self.manager = manager
        self.limits = limits or manager.settings.audio.limits()
        self.on_result = on_result
        self._server: asyncio.Server | None = None
        self._sessions: dict[asyncio.Task[Any], WyomingSession] = {}
        self._info: Any = None
        if allow is None:
            allow = manager.settings.wyoming_allow  # checked by Settings
        self.allowed = [ipaddress.ip_network(entry, strict=False) for entry in allow]

    @property
    def sessions(self) -> list[WyomingSession]:
        """The connections being served now."""
        return list(self._sessions.values())

    @property
    def port(self) -> int | None:
        """The bound TCP port (useful with port 0), or None for a Unix socket."""
        if self._server is None or not self._server.sockets:
            return None
        address = self._server.sockets[0].getsockname()
        return int(address[1]) if isinstance(address, tuple) else None

    async def start(self) -> None:
        """Bind and start accepting; returns at once."""
        self._info = build_info(self.manager)
        if self._address.scheme == "tcp":
            self._server = await asyncio.start_server(
                self._accept, host=self._address.hostname, port=self._address.port
            )
        else:
            self._server = await asyncio.start_unix_server(self._accept, path=self._address.path)
        logger.info("wyoming listening on %s", self.uri)

    def _refused_peer(self, writer: asyncio.StreamWriter) -> str | None:
        """The peer's address when ``wyoming_allow`` does not list it, else None."""
        if not self.allowed or self._address.scheme != "tcp":
            return None
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        try:
            ip = ipaddress.ip_address(host.partition("%")[0])  # an IPv6 zone id is no address
        except ValueError:
            return host
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
        return None if any(ip in net for net in self.allowed) else host

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str
    ) -> None:
        """Answer a client outside ``wyoming_allow`` with one error event, then close."""
        from wyoming.error import Error
        from wyoming.event import async_write_event

        error = ClientNotAllowed(f"this Wyoming server does not serve {host} (wyoming_allow)")
        logger.warning("wyoming connection from %s refused: not in wyoming_allow", host)
        if self.on_result is not None:
            self.on_result(error.code)
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            await async_write_event(Error(text=error.message, code=error.code).event(), writer)
            writer.write_eof()
            # Closing with the client's events unread would reset the connection, and a
            # reset can drop the error event before the client reads it: read (and
            # discard) until the client closes, for a few seconds at most.
            await asyncio.wait_for(_read_to_end(reader), _REFUSAL_LINGER_S)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        refused = self._refused_peer(writer)
        if refused is not None:
            await self._refuse(reader, writer, refused)
            return
        session = WyomingSession(
            reader, writer, self.manager, self._info, self.limits, self.on_result
        )
        task = asyncio.current_task()
        if task is not None:
            self._sessions[task] = session
        try:
            await session.run()
        finally:
            if task is not None:
                self._sessions.pop(task, None)

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop accepting; give utterances under way up to ``grace_s`` to get their answer
        (nothing lost on a graceful stop); then end every session and remove the Unix
        socket file."""
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace_s
        while any(s.busy for s in self._sessions.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=5)
        if self._address.scheme == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._address.path)
