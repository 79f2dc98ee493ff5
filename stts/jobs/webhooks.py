"""Signed webhooks, sent only to hosts the operator allowed.

``jobs.webhook_hosts`` lists host names, IP addresses and CIDR ranges. A ``callback_url``
is checked when the job is submitted (:meth:`WebhookPolicy.check_url`: 400 if its host
is not listed) and again at every delivery, after resolving the host: the connection
goes to the address that was checked (no second lookup a DNS answer could change in
between), and that address must be in a listed range, or, for a host listed by name, a
public address. So a listed name that resolves to loopback, a private network or a
cloud metadata address is refused unless the operator listed that range too. Redirects
are never followed.

The body is JSON; ``X-STTS-Signature: sha256=<hex>`` is the HMAC-SHA256 of the exact
body bytes with ``jobs.webhook_secret``.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from stts import __version__
from stts.config import JobsSettings
from stts.errors import CallbackNotAllowed, ConfigError, shorten

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_URL_CHARS = 2048


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one attempt."""

    ok: bool
    error: str | None = None
    retry: bool = True
    """False when trying again cannot help (a redirect, a host no longer allowed)."""


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-STTS-Signature`` value of a body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookPolicy:
    """Which callback URLs are allowed, and the delivery of events to them."""

    def __init__(self, settings: JobsSettings) -> None:
        self.names: set[str] = set()
        self.networks: list[IPNetwork] = []
        for entry in settings.webhook_hosts:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                name = entry.strip().lower().rstrip(".")
                if not name or "/" in name or ":" in name or " " in name:
                    raise ConfigError(
                        f"jobs.webhook_hosts: {shorten(entry)} is not a host name, "
                        "an IP address or a CIDR range"
                    ) from None
                self.names.add(name)
        secret = settings.webhook_secret
        self.secret = secret.get_secret_value().encode() if secret is not None else b""
        self.timeout_s = settings.webhook_timeout_s

    @property
    def enabled(self) -> bool:
        """Whether any host is allowed."""
        return bool(self.names or self.networks)

    def _in_networks(self, address: IPAddress) -> bool:
        return any(address in net for net in self.networks)

    def check_url(self, url: str) -> str:
        """The URL if a job may call it back, else CallbackNotAllowed (400)."""
        if not self.enabled:
            raise CallbackNotAllowed(
                "webhooks are off on this server (the operator allows hosts with "
                "jobs.webhook_hosts)"
            )
        if len(url) > _MAX_URL_CHARS:
            raise CallbackNotAllowed(f"callback_url is longer than {_MAX_URL_CHARS} characters")
        # urlsplit drops tabs and newlines silently, http.client cannot send other than
        # ASCII: the URL stored must be exactly the one called.
        if not (url.isascii() and url.isprintable()) or " " in url:
            raise CallbackNotAllowed(
                "callback_url must be printable ASCII without spaces (percent-encode the rest)"
            )
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise CallbackNotAllowed(f"callback_url {shorten(url)} is not a URL") from exc
        if port == 0:
            raise CallbackNotAllowed("callback_url names port 0")
        host = (parts.hostname or "").lower().rstrip(".")
        if parts.scheme not in ("http", "https") or not host:
            raise CallbackNotAllowed("callback_url must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise CallbackNotAllowed("callback_url must not carry credentials")
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        allowed = self._in_networks(literal) if literal is not None else host in self.names
        if not allowed:
            raise CallbackNotAllowed(
                f"callback_url host {shorten(host)} is not one this server may call "
                "(jobs.webhook_hosts)"
            )
        return url

    def _resolve(self, host: str, port: int) -> IPAddress:
        """The address to connect to, checked; ValueError why not."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            candidates = [literal]
        else:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            candidates = [ipaddress.ip_address(info[4][0]) for info in infos]
        for address in candidates:
            if self._in_networks(address):
                return address
            if literal is None and host in self.names and address.is_global:
                return address
        raise ValueError(f"{host} resolves to no address this server may call")

    def deliver(self, url: str, event: dict[str, Any]) -> Delivery:
        """POST the event once (blocking)."""
        try:
            self.check_url(url)
        except CallbackNotAllowed as exc:
            return Delivery(False, exc.message, retry=False)
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        body = json.dumps(event, ensure_ascii=False).encode()
        try:
            address = self._resolve(host, port)
        except (OSError, ValueError) as exc:
            return Delivery(False, f"resolving the callback host failed: {exc}")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = {
            "Host": parts.netloc.rsplit("@", 1)[-1],
            "Content-Type": "application/json",
            "User-Agent": f"stts/{__version__}",
            "X-STTS-Event": str(event.get("type", "")),
            "X-STTS-Signature": sign(self.secret, body),
        }
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = _PinnedHTTPSConnection(str(address), port, host, self.timeout_s)
        else:
            connection = http.client.HTTPConnection(str(address), port, timeout=self.timeout_s)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read(64 * 1024)
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            return Delivery(False, f"the callback failed: {type(exc).__name__}")
        finally:
            connection.close()
        if 200 <= status < 300:
            return Delivery(True)
        if 300 <= status < 400:
            refused = f"the callback answered {status}; redirects are not followed"
            return Delivery(False, refused, retry=False)
        return Delivery(False, f"the callback answered {status}")


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address already checked, with the certificate checked for the host name."""

    def __init__(self, address: str, port: int, server_name: str, timeout: float) -> None:
        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context())
        self._server_name = server_name

    def connect(self) -> None:
        """Connect to the pinned address; SNI and certificate for the URL's host."""
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_name)  # type: ignore[attr-defined]
