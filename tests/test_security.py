"""Security on a real server: X-Forwarded-For with several lines, wrong keys rate limited
per client address, API keys taken whole (names given apart), duplicates refused at
start-up, and CORS (off by default; preflights open; headers on error answers too)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stts.api.app import create_app
from stts.config import Settings
from stts.errors import ConfigError
from tests.conftest import LiveServer, corpus_file

ORIGIN = "https://app.example"
EMPTY_WAV = {"speech": ("e.wav", b"")}  # answered 400 by the route: cheap, no model runs


def _xff(*lines: str) -> list[tuple[str, str]]:
    """One X-Forwarded-For header line per argument, in order."""
    return [("X-Forwarded-For", line) for line in lines]


@pytest.fixture(scope="module")
def guarded(settings: Settings) -> Iterator[LiveServer]:
    """Keys, a trusted proxy (the test client itself), tight wrong-key allowance, CORS,
    and Vosk enabled without a model (a 503 on demand)."""
    conf = Settings(
        cache_dir=settings.cache_dir,
        engines=["pocketsphinx", "vosk"],
        default_engine="pocketsphinx",
        api_keys=["sk-proj:abcdef"],
        named_api_keys={"alice": "secret-alice"},
        trusted_proxies=["127.0.0.1/32"],
        rate_limit={
            "requests_per_minute": 1,
            "burst": 1,
            "per_key": {"alice": 6000},
            "auth_failures_burst": 3,
            "auth_failures_per_minute": 1,
        },
        cors_origins=[ORIGIN],
        audio={"max_bytes": 100_000},
    )
    with LiveServer(conf) as live:
        yield live


# Item 4: X-Forwarded-For lines and wrong keys.


def test_every_forwarded_for_line_counts_and_the_walk_starts_at_the_right(
    settings: Settings,
) -> None:
    conf = Settings(
        cache_dir=settings.cache_dir,
        engines=["pocketsphinx"],
        default_engine="pocketsphinx",
        trusted_proxies=["127.0.0.1/32"],
        rate_limit={"requests_per_minute": 1, "burst": 1},
    )
    with LiveServer(conf) as live:
        url = f"{live.url}/api/v1/stt"
        # The client writes a line of its own choosing; the proxy adds the real address on
        # a second line. The client is the real address every time: one bucket.
        codes = [
            httpx.post(url, files=EMPTY_WAV, headers=_xff(f"203.0.113.{i}", "198.51.100.7"))
            for i in range(3)
        ]
        assert [r.status_code for r in codes] == [400, 429, 429]
        # Another real client behind the same proxy has its own bucket.
        other = httpx.post(url, files=EMPTY_WAV, headers=_xff("203.0.113.1", "198.51.100.8"))
        assert other.status_code == 400
        # Trusted hops at the right end are skipped, over line boundaries too.
        third = httpx.post(url, files=EMPTY_WAV, headers=_xff("198.51.100.9, 127.0.0.1"))
        assert third.status_code == 400
        again = httpx.post(url, files=EMPTY_WAV, headers=_xff("198.51.100.9", "127.0.0.1"))
        assert again.status_code == 429


def test_wrong_keys_are_limited_per_client_address(guarded: LiveServer) -> None:
    url = f"{guarded.url}/v1/models"
    attacker, victim = "198.51.100.20", "198.51.100.21"
    # No key at all guesses nothing and is not counted.
    for _ in range(5):
        assert httpx.get(url, headers=_xff(attacker)).status_code == 401
    # Three wrong keys (the allowance), then 429 with Retry-After; the attacker also
    # writes the victim's address on a first line, which must not matter.
    spoofing = _xff(victim, attacker)
    codes = [
        httpx.get(url, headers=[*spoofing, ("X-API-Key", f"guess-{i}")]).status_code
        for i in range(3)
    ]
    assert codes == [401, 401, 401]
    r = httpx.get(url, headers=[*spoofing, ("X-API-Key", "guess-3")])
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # While locked out, the right key is refused too: 200 vs 429 would be an oracle.
    right = httpx.get(url, headers=[*_xff(attacker), ("Authorization", "Bearer secret-alice")])
    assert right.status_code == 429
    # No one else is locked out.
    for key in ("secret-alice", "sk-proj:abcdef"):
        ok = httpx.get(url, headers=[*_xff(victim), ("Authorization", f"Bearer {key}")])
        assert ok.status_code == 200
    assert httpx.get(url, headers=_xff(victim) + [("X-API-Key", "x")]).status_code == 401
    # Open paths stay open for the locked-out address.
    assert httpx.get(f"{guarded.url}/health", headers=_xff(attacker)).status_code == 200


def test_wrong_key_allowance_refills(settings: Settings) -> None:
    conf = Settings(
        cache_dir=settings.cache_dir,
        engines=["pocketsphinx"],
        default_engine="pocketsphinx",
        api_keys=["right"],
        rate_limit={"auth_failures_burst": 1, "auth_failures_per_minute": 30},
    )
    with LiveServer(conf) as live:
        url = f"{live.url}/v1/models"
        assert httpx.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
        r = httpx.get(url, headers={"X-API-Key": "right"})
        assert r.status_code == 429
        time.sleep(int(r.headers["Retry-After"]) + 0.2)
        assert httpx.get(url, headers={"X-API-Key": "right"}).status_code == 200


# Item 5: key format and duplicates.


def test_keys_with_a_colon_are_whole_keys_and_names_are_given_apart(guarded: LiveServer) -> None:
    url = f"{guarded.url}/v1/models"
    client = _xff("198.51.100.30")
    assert httpx.get(url, headers=[*client, ("X-API-Key", "sk-proj:abcdef")]).status_code == 200
    # Neither half of it is a key.
    assert httpx.get(url, headers=[*client, ("X-API-Key", "abcdef")]).status_code == 401
    assert httpx.get(url, headers=[*client, ("X-API-Key", "sk-proj")]).status_code == 401
    # A named key answers to its key, not its name; per_key refers to the name (alice has
    # 6000/min where the rest have a burst of 1).
    assert httpx.get(url, headers=[*client, ("X-API-Key", "secret-alice")]).status_code == 200
    transcribe = f"{guarded.url}/api/v1/stt"
    codes = [
        httpx.post(transcribe, files=EMPTY_WAV, headers={"X-API-Key": "secret-alice"}).status_code
        for _ in range(3)
    ]
    assert codes == [400, 400, 400]


def _settings(cache_dir: Path, **keys: object) -> Settings:
    return Settings(
        cache_dir=cache_dir, engines=["pocketsphinx"], default_engine="pocketsphinx", **keys
    )


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"api_keys": ["same-secret", "same-secret"]}, "the same API key is given twice"),
        (
            {"api_keys": ["same-secret"], "named_api_keys": {"bob": "same-secret"}},
            "the same API key is given twice",
        ),
        (
            {"api_keys": ["same-secret"], "named_api_keys": {"key1": "other-secret"}},
            "API key name 'key1' is given twice",
        ),
        ({"api_keys": ["same-secret"], "file": "same-secret"}, "the same API key"),
        ({"named_api_keys": {"bob": "same-secret"}, "file": "x"}, "'bob' is given twice"),
        ({"api_keys": ["same-secret"], "rate_limit": {"per_key": {"carol": 5}}}, "'carol'"),
    ],
)
def test_duplicate_keys_and_names_are_refused_at_start_up(
    settings: Settings, tmp_path: Path, keys: dict[str, object], expected: str
) -> None:
    if "file" in keys:
        digest = hashlib.sha256(str(keys.pop("file")).encode()).hexdigest()
        (tmp_path / "keys.txt").write_text(f"bob {digest}\n")
        keys["api_keys_file"] = tmp_path / "keys.txt"
    with pytest.raises(ConfigError, match=expected) as caught:
        create_app(_settings(settings.cache_dir, **keys))
    assert "same-secret" not in caught.value.message
    assert "other-secret" not in caught.value.message


def test_stts_serve_reports_a_duplicate_key_in_one_line(cache_dir: Path) -> None:
    env = {
        **os.environ,
        "STTS_CACHE_DIR": str(cache_dir),
        "STTS_ENGINES": "pocketsphinx",
        "STTS_DEFAULT_ENGINE": "pocketsphinx",
        "STTS_API_KEYS": "sk-proj:dup,sk-proj:dup",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "stts.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # it fails before binding; a server that starts is the bug
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "the same API key is given twice" in lines[0]
    assert "dup" not in lines[0]


# Item 13: CORS.


def _cors(response: httpx.Response) -> tuple[str | None, str]:
    return (
        response.headers.get("access-control-allow-origin"),
        response.headers.get("access-control-expose-headers", "").lower(),
    )


def test_preflight_needs_no_key_and_is_never_rate_limited(guarded: LiveServer) -> None:
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, x-api-key, content-type",
    }
    for _ in range(5):  # more than any burst configured
        r = httpx.options(f"{guarded.url}/v1/audio/transcriptions", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ORIGIN
        allowed = r.headers["access-control-allow-headers"].lower()
        assert {"authorization", "x-api-key", "content-type"} <= set(allowed.split(", "))
        assert "POST" in r.headers["access-control-allow-methods"]
    # Another origin is not allowed.
    other = httpx.options(
        f"{guarded.url}/v1/audio/transcriptions", headers={**preflight, "Origin": "https://evil"}
    )
    assert "access-control-allow-origin" not in other.headers


def test_cors_headers_are_on_success_and_error_answers(guarded: LiveServer) -> None:
    base = guarded.url
    exposed = {"x-stt-engine", "x-stt-model", "x-stt-fallback", "x-request-id", "retry-after"}
    origin = {"Origin": ORIGIN}
    unauthorized = httpx.get(f"{base}/v1/models", headers=origin)
    assert unauthorized.status_code == 401 and _cors(unauthorized)[0] == ORIGIN

    ok = httpx.get(f"{base}/v1/models", headers={**origin, "X-API-Key": "secret-alice"})
    assert ok.status_code == 200
    allow, expose = _cors(ok)
    assert allow == ORIGIN and exposed | {"server-timing"} <= set(expose.split(", "))

    # Request rate: burst 1 for a key without its own rate.
    key = {**origin, "X-API-Key": "sk-proj:abcdef"}
    statuses = [httpx.post(f"{base}/api/v1/stt", files=EMPTY_WAV, headers=key) for _ in range(2)]
    limited = statuses[-1]
    assert limited.status_code == 429 and _cors(limited)[0] == ORIGIN
    assert "retry-after" in _cors(limited)[1]

    too_large = httpx.post(
        f"{base}/api/v1/stt",
        files={"speech": ("big.wav", b"\0" * 500_000)},
        headers={**origin, "X-API-Key": "secret-alice"},
    )
    assert too_large.status_code == 413 and _cors(too_large)[0] == ORIGIN

    # Vosk is enabled without a model: 503 engine_unavailable.
    speech = {"speech": ("a.wav", corpus_file("pocketsphinx__001.wav").read_bytes())}
    unavailable = httpx.post(
        f"{base}/api/v2/stt/vosk", files=speech, headers={**origin, "X-API-Key": "secret-alice"}
    )
    assert unavailable.status_code == 503 and _cors(unavailable)[0] == ORIGIN


def test_no_cors_headers_unless_configured(settings: Settings) -> None:
    with LiveServer(_settings(settings.cache_dir, api_keys=["k"])) as live:
        r = httpx.get(f"{live.url}/v1/models", headers={"Origin": ORIGIN, "X-API-Key": "k"})
        assert r.status_code == 200
        assert not [h for h in r.headers if h.startswith("access-control-")]
        preflight = httpx.options(
            f"{live.url}/v1/models",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
        )
        assert not [h for h in preflight.headers if h.startswith("access-control-")]


@pytest.mark.parametrize("origin", ["https://app.example/", "app.example", "ftp://x.example"])
def test_cors_origins_must_be_origins(origin: str) -> None:
    with pytest.raises(ValueError, match="is not an origin"):
        Settings(cors_origins=[origin])


def test_docs_and_metrics_need_a_key_when_keys_are_set(guarded: LiveServer) -> None:
    client = _xff("198.51.100.40")
    for path in ("/docs", "/openapi.json", "/metrics"):
        assert httpx.get(f"{guarded.url}{path}", headers=client).status_code == 401, path
        with_key = [*client, ("X-API-Key", "secret-alice")]
        assert httpx.get(f"{guarded.url}{path}", headers=with_key).status_code == 200, path


# Issue 17: several trusted proxies, bucket eviction, malformed api_keys_file lines.


@pytest.fixture(scope="module")
def proxied(settings: Settings) -> Iterator[LiveServer]:
    """Two layers of trusted proxies (the test client itself and 10.0.0.0/8), one request
    a minute with a burst of 1, and room for only three buckets."""
    conf = Settings(
        cache_dir=settings.cache_dir,
        engines=["pocketsphinx"],
        default_engine="pocketsphinx",
        trusted_proxies=["127.0.0.1/32", "10.0.0.0/8"],
        rate_limit={"requests_per_minute": 1, "burst": 1, "max_clients": 3},
    )
    with LiveServer(conf) as live:
        yield live


def _post(live: LiveServer, *lines: str) -> int:
    return httpx.post(f"{live.url}/api/v1/stt", files=EMPTY_WAV, headers=_xff(*lines)).status_code


def test_the_client_behind_several_trusted_proxies_is_the_right_most_untrusted_hop(
    proxied: LiveServer,
) -> None:
    """client -> proxy 10.0.0.5 -> proxy 10.1.2.3 -> stts (peer 127.0.0.1, trusted): the
    rate-limit identity is the client, whatever it wrote to the left of itself."""
    client = "198.51.100.50"
    assert _post(proxied, f"192.0.2.1, {client}, 10.0.0.5", "10.1.2.3") == 400
    # Same client, other forged hops on its left, the proxies in one line: same bucket.
    assert _post(proxied, f"192.0.2.99, 192.0.2.98, {client}, 10.0.0.5, 10.1.2.3") == 429
    # A trusted address written further left does not hide the client either.
    assert _post(proxied, f"198.51.100.51, 10.0.0.7, {client}, 10.0.0.5", "10.1.2.3") == 429
    # Another client behind the same two proxies has its own bucket (a server that took
    # the right-most hop, a proxy, would put every client in one bucket).
    assert _post(proxied, f"{client}, 198.51.100.52, 10.0.0.5", "10.1.2.3") == 400


def test_the_least_recently_used_bucket_is_dropped_beyond_max_clients(
    proxied: LiveServer,
) -> None:
    """max_clients = 3: a fourth client drops the bucket used longest ago, which then
    starts full again; a bucket used recently is kept, still empty."""
    a, b, c, d = (f"198.51.100.{60 + i}" for i in range(4))
    assert _post(proxied, a) == 400
    assert _post(proxied, b) == 400
    assert _post(proxied, a) == 429  # a is now the most recently used
    assert _post(proxied, c) == 400
    assert _post(proxied, d) == 400  # four clients: b, used longest ago, is dropped
    assert _post(proxied, a) == 429  # kept: still empty (insertion order would drop it)
    assert _post(proxied, b) == 400  # dropped, so it starts full again
    assert _post(proxied, b) == 429


def _key_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keys"
    path.write_bytes(text.encode())
    return path


def _hex(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_key_file_skips_blank_lines_and_comments_and_names_unnamed_lines(
    settings: Settings, tmp_path: Path
) -> None:
    from stts.api.edge import load_api_keys

    text = (
        "\ufeff# keys of the team\n"  # a byte-order mark, as some editors write one
        "\n"
        "   \t \n"
        f"alice {_hex('k-alice')}   # alice's laptop\n"
        f"sha256:{_hex('k-anon')}\r\n"  # CRLF, prefix, no name: named after its line
        f"  bob\tsha256:{_hex('k-bob').upper()}\n"
        "# the end"
    )
    keys = load_api_keys(_settings(settings.cache_dir, api_keys_file=_key_file(tmp_path, text)))
    assert keys == {
        "alice": hashlib.sha256(b"k-alice").digest(),
        "file5": hashlib.sha256(b"k-anon").digest(),
        "bob": hashlib.sha256(b"k-bob").digest(),
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("secret-typed-in-plain\n", "line 1: expected '[name] <sha256 hex>'"),
        (f"# c\nalice {_hex('x')} extra\n", "line 2: expected"),
        (f"alice {_hex('x')[:-1]}\n", "line 1: expected"),
        (f"alice sha256:{_hex('x')}z\n", "line 1: expected"),
        (f"al/ice {_hex('x')}\n", "line 1: a key name is"),
        (f"alice {_hex('x')}\nalice {_hex('y')}\n", "'alice' is given twice"),
        (f"alice {_hex('x')}\n\nbob {_hex('x')}\n", "same API key is given twice"),
        (f"{_hex('x')}\nfile1 {_hex('y')}\n", "'file1' is given twice"),
        (b"alice \xff\xfe\n", "not UTF-8"),
    ],
)
def test_a_bad_key_file_line_is_one_config_error_naming_the_line(
    settings: Settings, tmp_path: Path, text: str | bytes, expected: str
) -> None:
    path = tmp_path / "keys"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=re.escape(expected)) as caught:
        create_app(_settings(settings.cache_dir, api_keys_file=path))
    message = caught.value.message
    assert "\n" not in message and "secret-typed" not in message and "extra" not in message


def test_an_unreadable_key_file_is_a_config_error(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        create_app(_settings(settings.cache_dir, api_keys_file=tmp_path / "missing"))
    with pytest.raises(ConfigError, match="is not a file"):
        create_app(_settings(settings.cache_dir, api_keys_file=tmp_path))
