"""What every request passes through before a route: id, logs, metrics, drain, auth, rate limit.

Pure ASGI middlewares (no response buffering, so streaming responses stay streaming).
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stts.api.responses import error_response
from stts.config import Settings
from stts.errors import InvalidRequest, RateLimited, ShuttingDown, Unauthorized
from stts.logs import request_id_var, timings_var
from stts.metrics import Metrics

access_log = logging.getLogger("stts.access")

OPEN_PATHS = frozenset({"/health", "/ready"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_NAMED_KEY = re.compile(r"^([A-Za-z0-9_.-]{1,64}):(.+)$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RequestContext:
    """Request id (echoed in X-Request-ID), one access-log line, metrics, 503 while draining."""

    def __init__(self, app: ASGIApp, metrics: Metrics, is_draining: Callable[[], bool]) -> None:
        self.app = app
        self.metrics = metrics
        self.is_draining = is_draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
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
            if self.is_draining() and scope["path"] != "/health":
                await error_response(
                    ShuttingDown("the server is shutting down; retry on another instance")
                )(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
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
        rate = (per_minute if per_minute is not None else self.per_minute) / 60.0
        if rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.pop(identity, None) or _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            self._buckets[identity] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate


def load_api_keys(settings: Settings) -> dict[str, bytes]:
    """Key name -> SHA-256 digest, from STTS_API_KEYS and the hashed-keys file."""
    keys: dict[str, bytes] = {}
    for index, secret in enumerate(settings.api_keys, start=1):
        value = secret.get_secret_value()
        match = _NAMED_KEY.match(value)
        name, key = (match.group(1), match.group(2)) if match else (f"key{index}", value)
        keys[name] = hashlib.sha256(key.encode()).digest()
    if settings.api_keys_file is not None:
        keys.update(_read_key_file(settings.api_keys_file))
    return keys


def _read_key_file(path: Path) -> dict[str, bytes]:
    if not path.is_file():
        raise InvalidRequest("api_keys_file does not exist")
    keys = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        digest = parts[-1].removeprefix("sha256:")
        if len(parts) > 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise InvalidRequest(f"api_keys_file line {number}: expected '[name] <sha256 hex>'")
        keys[parts[0] if len(parts) == 2 else f"file{number}"] = bytes.fromhex(digest)
    return keys


class Guard:
    """API keys (Bearer or X-API-Key, constant-time) and per-key / per-IP token buckets."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.keys = load_api_keys(settings)
        limits = settings.rate_limit
        self.per_key = limits.per_key
        self.buckets = TokenBuckets(limits.requests_per_minute, limits.burst, limits.max_clients)
        self.enabled = limits.requests_per_minute > 0 or bool(limits.per_key)
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]

    def _key_name(self, scope: Scope) -> str | None:
        presented = None
        auth = _header(scope, b"authorization")
        if auth and auth[:7].lower() == "bearer ":
            presented = auth[7:].strip()
        presented = presented or _header(scope, b"x-api-key")
        if not presented:
            return None
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
        forwarded = _header(scope, b"x-forwarded-for")
        if not forwarded:
            return str(peer)
        # Walk from the right: the first address not a trusted proxy is the client.
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
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
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        identity: str | None = None
        if self.keys:
            name = self._key_name(scope)
            if name is None:
                error = Unauthorized(
                    "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key'"
                )
                response = error_response(error)
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
            identity = f"key:{name}"
        if self.enabled and scope["method"] == "POST":
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
                await error_response(limited)(scope, receive, send)
                return
        await self.app(scope, receive, send)
