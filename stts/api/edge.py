"""What every request passes through before a route: id, logs, metrics, drain, auth, rate limit.

Pure ASGI middlewares (no response buffering, so streaming responses stay streaming).
WebSocket handshakes (the realtime face) pass through the same id, log, key and rate
checks: a refused handshake is answered with the same JSON error and HTTP status
before the upgrade (the ASGI WebSocket denial response), and opening a WebSocket takes
a token from the same bucket as a POST.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stts.api.responses import error_response
from stts.config import Settings
from stts.errors import ConfigError, RateLimited, SttsError, Unauthorized
from stts.logs import request_id_var, timings_var
from stts.metrics import Metrics

access_log = logging.getLogger("stts.access")

OPEN_PATHS = frozenset({"/health", "/ready", "/"})
OPEN_PREFIXES = ("/web/assets/",)
"""The web page and its static files load without a key; every call they make needs one."""
BROWSER_KEY_PREFIX = "openai-insecure-api-key."
"""A ``Sec-WebSocket-Protocol`` entry carrying the API key (browsers cannot set headers)."""
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _header_lines(scope: Scope, name: bytes) -> list[str]:
    """Every line of a header that may be repeated, in the order received."""
    return [value.decode("latin-1") for key, value in scope.get("headers", []) if key == name]


def _request_id(scope: Scope) -> str:
    incoming = _header(scope, b"x-request-id")
    return incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex


async def deny(
    error: SttsError,
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer a request, or refuse a WebSocket handshake, with the error's JSON and status.

    A WebSocket is refused before the upgrade with the same HTTP response (the ASGI
    denial-response extension); a server without that extension gets a plain close,
    which clients see as HTTP 403.
    """
    if scope["type"] == "websocket" and "websocket.http.response" not in scope.get(
        "extensions", {}
    ):
        await send({"type": "websocket.close", "code": 1008, "reason": error.code})
        return
    response = error_response(error)
    response.headers.update(headers or {})
    await response(scope, receive, send)


def route_template(scope: Scope) -> str:
    """The path template of the route that answered, for metric labels: FastAPI's own
    routes put themselves in the scope; the plain Starlette routes it adds (``/docs``,
    ``/openapi.json``, ``/redoc``) don't, so those are matched here; else "unmatched"."""
    path = getattr(scope.get("route"), "path", None)
    if path:
        return str(path)
    router = getattr(scope.get("app"), "router", None)
    for route in getattr(router, "routes", ()):
        # FastAPI's included routers (_IncludedRouter) have no path of their own.
        template = getattr(route, "path", None)
        if template and route.matches(scope)[0] is Match.FULL:
            return str(template)
    return "unmatched"


class CorsOptions(TypedDict):
    """Keyword arguments of Starlette's CORSMiddleware."""

    allow_origins: list[str]
    allow_methods: list[str]
    allow_headers: list[str]
    expose_headers: list[str]
    allow_credentials: bool
    max_age: int


def cors_options(settings: Settings) -> CorsOptions:
    """Starlette CORSMiddleware options for settings.cors_origins.

    No credentials mode: keys travel in headers, never in cookies, so a browser app sends
    them with a plain fetch and ``*`` stays usable.
    """
    return {
        "allow_origins": settings.cors_origins,
        "allow_methods": ["GET", "HEAD", "POST"],
        "allow_headers": ["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
        "expose_headers": [
            "X-STT-Engine",
            "X-STT-Model",
            "X-STT-Fallback",
            "X-Request-ID",
            "Retry-After",
            "Server-Timing",
        ],
        "allow_credentials": False,
        "max_age": 600,
    }


class RequestContext:
    """Request id (echoed in X-Request-ID), one access-log line, metrics (draining: DrainGuard)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        timings: dict[str, float] = {}
        timings_token = timings_var.set(timings)
        started = time.perf_counter()
        status = 500
        engine = ""

        async def send_with_id(message: Message) -> None:
            nonlocal status, engine
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                for key, value in headers:
                    if key == b"x-stt-engine":
                        engine = value.decode("latin-1")
                headers.append((b"x-request-id", request_id.encode()))
                if timings:  # stages done before the response starts, then the total so far
                    timings["total"] = (time.perf_counter() - started) * 1000.0
                    value = ", ".join(f"{k};dur={v:.1f}" for k, v in timings.items())
                    headers.append((b"server-timing", value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            template = route_template(scope)
            self.metrics.requests.labels(template, scope["method"], str(status), engine).inc()
            self.metrics.latency.labels(template).observe(elapsed)
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                    "engine": engine or None,
                    "client": (scope.get("client") or ("", 0))[0],
                    "timings_ms": {k: round(v, 1) for k, v in timings.items() if k != "total"}
                    or None,
                },
            )
            request_id_var.reset(token)
            timings_var.reset(timings_token)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket session: its id is in every log line it causes (the session runs
        inside this call), one access-log line when it ends, 101 counted if accepted."""
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500  # the server's answer to an app that fails before accepting

        async def send_with_id(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind in ("websocket.accept", "websocket.http.response.start"):
                status = 101 if kind == "websocket.accept" else message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            elif kind == "websocket.close" and status == 500:
                status = 403  # closed before accepting: the server answers 403
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            template = route_template(scope)
            # Sessions last minutes: counted, but kept out of the request-latency histogram.
            self.metrics.requests.labels(template, "GET", str(status), "").inc()
            access_log.info(
                "WEBSOCKET %s %s",
                scope["path"],
                status,
                extra={
                    "method": "WEBSOCKET",
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
            request_id_var.reset(token)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Token buckets by client identity, bounded in number (least recently used evicted)."""

    def __init__(self, per_minute: float, burst: int, max_clients: int) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, identity: str, per_minute: float | None = None) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        return self._use(identity, per_minute, take=True)

    def peek(self, identity: str) -> float:
        """0 if a token is available (none is taken), else the seconds until one is."""
        return self._use(identity, None, take=False)

    def _use(self, identity: str, per_minute: float | None, *, take: bool) -> float:
        rate = (per_minute if per_minute is not None else self.per_minute) / 60.0
        if rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            if not take and identity not in self._buckets:
                return 0.0  # a full bucket: no need to keep one
            bucket = self._buckets.pop(identity, None) or _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            self._buckets[identity] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1.0:
                if take:
                    bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate


def load_api_keys(settings: Settings) -> dict[str, bytes]:
    """Key name -> SHA-256 digest from api_keys, named_api_keys and api_keys_file.

    ``api_keys`` entries are whole keys (a ``:`` inside one is part of the key), named
    ``key1``..``keyN``. A name or a key given twice, across all three sources, is a
    ConfigError; messages name the sources and names, never a key.
    """
    entries: list[tuple[str, str, bytes]] = []  # (name, where it came from, digest)
    for index, secret in enumerate(settings.api_keys, start=1):
        entries.append(
            (
                f"key{index}",
                f"api_keys entry {index}",
                _digest(secret.get_secret_value(), f"api_keys entry {index}"),
            )
        )
    for name, secret in settings.named_api_keys.items():
        where = f"named_api_keys[{name!r}]"
        if not _KEY_NAME.match(name):
            raise ConfigError(f"{where}: a key name is 1-64 of A-Z a-z 0-9 _ . -")
        entries.append((name, where, _digest(secret.get_secret_value(), where)))
    if settings.api_keys_file is not None:
        entries.extend(_read_key_file(settings.api_keys_file))
    keys: dict[str, bytes] = {}
    seen_names: dict[str, str] = {}
    seen_digests: dict[bytes, str] = {}
    for name, where, digest in entries:
        if name in seen_names:
            raise ConfigError(
                f"API key name {name!r} is given twice ({seen_names[name]} and {where}); "
                "every key needs its own name"
            )
        if digest in seen_digests:
            raise ConfigError(
                f"the same API key is given twice ({seen_digests[digest]} and {where}); remove one"
            )
        seen_names[name] = where
        seen_digests[digest] = where
        keys[name] = digest
    unknown = sorted(set(settings.rate_limit.per_key) - set(keys))
    if unknown:
        raise ConfigError(
            f"rate_limit.per_key names no configured API key: {', '.join(map(repr, unknown))}"
            f" (key names: {', '.join(keys) or 'none'})"
        )
    return keys


def _digest(key: str, where: str) -> bytes:
    if not key:
        raise ConfigError(f"{where} is empty")
    return hashlib.sha256(key.encode()).digest()


def _read_key_file(path: Path) -> list[tuple[str, str, bytes]]:
    if not path.exists():
        raise ConfigError(f"api_keys_file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"api_keys_file {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # an editor's byte-order mark is no key
    except UnicodeDecodeError as exc:
        raise ConfigError(f"api_keys_file {path} is not UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"api_keys_file {path} cannot be read: {exc.strerror}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        digest = parts[-1].removeprefix("sha256:")
        name = parts[0] if len(parts) == 2 else f"file{number}"
        if len(parts) > 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise ConfigError(f"api_keys_file line {number}: expected '[name] <sha256 hex>'")
        if not _KEY_NAME.match(name):
            raise ConfigError(
                f"api_keys_file line {number}: a key name is 1-64 of A-Z a-z 0-9 _ . -"
            )
        entries.append((name, f"api_keys_file line {number}", bytes.fromhex(digest)))
    return entries


class Guard:
    """API keys (Bearer or X-API-Key, constant-time), per-key / per-IP token buckets, and a
    per-IP allowance of wrong keys.

    A client address that used up its wrong-key allowance gets 429 on every request that
    needs a key, the right key included, until the allowance refills: answering the right
    key with 200 and the wrong ones with 429 would keep the guessing oracle at full speed.
    Only that address is refused, so an attacker can lock out no one else (behind a proxy,
    as long as trusted_proxies names it). A request with no key at all guesses nothing
    and is not counted.
    """

    def __init__(
        self, app: ASGIApp, settings: Settings, keys: dict[str, bytes] | None = None
    ) -> None:
        self.app = app
        self.keys = load_api_keys(settings) if keys is None else keys
        limits = settings.rate_limit
        self.per_key = limits.per_key
        self.buckets = TokenBuckets(limits.requests_per_minute, limits.burst, limits.max_clients)
        self.enabled = limits.requests_per_minute > 0 or bool(limits.per_key)
        self.auth_failures = TokenBuckets(
            limits.auth_failures_per_minute, limits.auth_failures_burst, limits.max_clients
        )
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]

    def _presented_key(self, scope: Scope) -> str | None:
        presented = None
        auth = _header(scope, b"authorization")
        if auth and auth[:7].lower() == "bearer ":
            presented = auth[7:].strip()
        presented = presented or _header(scope, b"x-api-key")
        if not presented and scope["type"] == "websocket":
            for protocol in scope.get("subprotocols", []):
                if protocol.startswith(BROWSER_KEY_PREFIX):
                    presented = protocol[len(BROWSER_KEY_PREFIX) :]
                    break
        return presented or None

    def _key_name(self, presented: str) -> str | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for name, stored in self.keys.items():  # no early exit: time does not depend on which
            if hmac.compare_digest(digest, stored):
                found = name
        return found

    def client_ip(self, scope: Scope) -> str:
        """The peer address, or the X-Forwarded-For client when the peer is a trusted proxy."""
        peer = (scope.get("client") or ("unknown", 0))[0]
        if not self.proxies or not self._trusted(peer):
            return str(peer)
        # A proxy appends its own line or extends the last one; a client may send lines of
        # its own before. All lines in order are one list of hops.
        hops = [
            hop.strip()
            for line in _header_lines(scope, b"x-forwarded-for")
            for hop in line.split(",")
            if hop.strip()
        ]
        # Walk from the right: the first address not a trusted proxy is the client.
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return str(peer)

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] not in ("http", "websocket")
            or scope["path"] in OPEN_PATHS
            or scope["path"].startswith(OPEN_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        identity: str | None = None
        if self.keys:
            address = self.client_ip(scope)
            wait = self.auth_failures.peek(address)
            if wait > 0:
                limited = RateLimited(
                    "too many requests with a wrong API key from this address; retry later",
                    retry_after=max(1, math.ceil(wait)),
                )
                await deny(limited, scope, receive, send)
                return
            presented = self._presented_key(scope)
            name = self._key_name(presented) if presented else None
            if name is None:
                if presented:
                    self.auth_failures.take(address)
                error = Unauthorized(
                    "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key'"
                    + (
                        f" (or the WebSocket subprotocol '{BROWSER_KEY_PREFIX}<key>')"
                        if scope["type"] == "websocket"
                        else ""
                    )
                )
                await deny(error, scope, receive, send, {"WWW-Authenticate": "Bearer"})
                return
            identity = f"key:{name}"
            # Routes that keep data per key (jobs) read whose request this is.
            scope.setdefault("state", {})["api_key_name"] = name
        # Opening a WebSocket session costs what a POST costs.
        if self.enabled and (scope["type"] == "websocket" or scope["method"] == "POST"):
            identity = identity or f"ip:{self.client_ip(scope)}"
            per_minute = (
                self.per_key.get(identity.removeprefix("key:"))
                if identity.startswith("key:")
                else None
            )
            wait = self.buckets.take(identity, per_minute)
            if wait > 0:
                limited = RateLimited(
                    "rate limit exceeded; retry later", retry_after=max(1, math.ceil(wait))
                )
                await deny(limited, scope, receive, send)
                return
        await self.app(scope, receive, send)
