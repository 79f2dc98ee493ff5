"""/docs and /redoc work on an air-gapped host: every asset they load comes from stts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from stts.config import Settings
from tests.conftest import LiveServer

_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture(scope="module")
def docs_server(cache_dir: Path) -> Iterator[LiveServer]:
    conf = Settings(cache_dir=cache_dir, engines=["pocketsphinx"], default_engine="pocketsphinx")
    with LiveServer(conf) as live:
        yield live


def _references(html: str) -> list[str]:
    """Every URL the page loads or links: src/href attributes, ReDoc's spec-url, Swagger's url."""
    found = re.findall(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']""", html)
    found += re.findall(r"""\burl\s*:\s*["']([^"']+)["']""", html)
    return found


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_another_host(docs_server: LiveServer, page: str) -> None:
    response = httpx.get(docs_server.url + page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    references = _references(html)
    assert any(r.endswith(".js") for r in references), references
    # No absolute URL at all in the page: not a CDN, not web fonts, not a validator badge.
    assert not re.findall(r"(?:https?:)?//[a-z0-9.-]+", html, flags=re.IGNORECASE), html
    for ref in references:
        url = urljoin(response.url.raw_path.decode() and str(response.url), ref)
        assert urlsplit(url).netloc == urlsplit(docs_server.url).netloc, ref
        asset = httpx.get(url)
        assert asset.status_code == 200, ref
        suffix = Path(urlsplit(url).path).suffix
        expected = _CONTENT_TYPES.get(suffix, "application/json")
        assert asset.headers["content-type"].split(";")[0] == expected, ref
        assert len(asset.content) > 100, ref


def test_swagger_ui_asks_no_online_validator(docs_server: LiveServer) -> None:
    html = httpx.get(docs_server.url + "/docs").text
    # Swagger UI's default validatorUrl is validator.swagger.io: a badge fetched from there.
    assert '"validatorUrl": null' in html


@pytest.mark.parametrize(
    "path", ["/docs/assets/nope.js", "/docs/assets/..%2F..%2Fconfig.py", "/docs/assets/"]
)
def test_only_the_listed_assets_are_served(docs_server: LiveServer, path: str) -> None:
    response = httpx.get(docs_server.url + path)
    assert response.status_code == 404
    assert {"message", "type", "code"} <= set(response.json()["error"])


def test_docs_and_their_assets_need_a_key_when_keys_are_set(cache_dir: Path) -> None:
    conf = Settings(
        cache_dir=cache_dir,
        engines=["pocketsphinx"],
        default_engine="pocketsphinx",
        api_keys=["docs-key"],
    )
    with LiveServer(conf) as live:
        for path in ("/docs", "/redoc", "/docs/assets/swagger-ui-bundle.js"):
            assert httpx.get(live.url + path).status_code == 401, path
            with_key = httpx.get(live.url + path, headers={"X-API-Key": "docs-key"})
            assert with_key.status_code == 200, path
