"""Shared fixtures: the real corpus, real models, a real server on 127.0.0.1."""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from stts import synthetic
from stts.api.app import server_config
from stts.audio import RawFormat, decode_audio
from stts.config import Settings
from stts.server import build_app
from stts.service import EngineManager
from stts.testing import free_port, wait_ready

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CORPUS = Path(
    os.environ.get("STTS_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)


@dataclass(frozen=True)
class CorpusItem:
    """One manifest row."""

    path: Path
    duration: float
    sample_rate: int
    channels: int
    format: str
    reference: str

    @property
    def raw(self) -> RawFormat | None:
        """Headerless files are 16 kHz mono s16le in this corpus."""
        return RawFormat() if self.path.suffix == ".raw" else None


def load_corpus() -> list[CorpusItem]:
    """The manifest as items (empty when the corpus is not beside the checkout)."""
    manifest = CORPUS / "manifest.tsv"
    if not manifest.is_file():
        return []
    with manifest.open(newline="") as fh:
        return [
            CorpusItem(
                CORPUS / row["file"],
                float(row["duration_s"]),
                int(row["sample_rate"]),
                int(row["channels"]),
                row["format"],
                row["reference_text"],
            )
            for row in csv.DictReader(fh, delimiter="\t")
        ]


CORPUS_ITEMS = load_corpus()
requires_corpus = pytest.mark.skipif(not CORPUS_ITEMS, reason=f"corpus not found at {CORPUS}")


def pytest_configure(config: pytest.Config) -> None:
    """In CI a missing corpus fails the run: it would turn most of the suite into skips."""
    if os.environ.get("CI") == "true" and not CORPUS_ITEMS:
        raise pytest.UsageError(
            f"CI=true and no corpus at {CORPUS} (set STTS_CORPUS or check out shared/)"
        )


def corpus_file(name: str) -> Path:
    """Path of one corpus file by its manifest name."""
    for item in CORPUS_ITEMS:
        if item.path.name == name:
            return item.path
    pytest.skip(f"corpus file {name} not available")


def corpus_long_form(files: list[str], seconds: float, **kwargs: Any) -> synthetic.LongForm:
    """A long-form recording of these corpus files with pauses (``synthetic.long_form``)."""
    references = {item.path.name: item.reference for item in CORPUS_ITEMS}
    clips = [(decode_audio(corpus_file(name)).samples, references[name]) for name in files]
    return synthetic.long_form(clips, seconds, **kwargs)


def whisper_segment(words: list[tuple[float, float, str]]) -> Any:
    """A faster-whisper segment made of these (start, end, word) words."""
    from faster_whisper.transcribe import Segment, Word

    return Segment(
        id=0,
        seek=0,
        start=words[0][0],
        end=words[-1][1],
        text="".join(w for _a, _b, w in words),
        tokens=[],
        avg_logprob=-0.2,
        compression_ratio=1.2,
        no_speech_prob=0.01,
        words=[Word(start=a, end=b, word=w, probability=0.9) for a, b, w in words],
        temperature=0.0,
    )


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model cache for the session (the embedded model is assembled here once)."""
    return tmp_path_factory.mktemp("stts-cache")


@pytest.fixture(scope="session")
def settings(cache_dir: Path) -> Settings:
    """Default settings with an isolated cache; both embedded engines enabled."""
    return Settings(cache_dir=cache_dir, engines=["whisper", "pocketsphinx"])


@pytest.fixture(scope="session")
def manager(settings: Settings) -> Iterator[EngineManager]:
    """One manager for the session: each model loads once for all tests."""
    mgr = EngineManager(settings)
    yield mgr
    mgr.close()


class LiveServer:
    """A real uvicorn server on 127.0.0.1, in a background thread of the test process."""

    def __init__(self, settings: Settings, manager: EngineManager | None = None) -> None:
        self.port = free_port()
        self.app = build_app(settings, manager=manager)
        config = server_config(
            self.app,
            settings,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_ready(self.url, timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="session")
def server(settings: Settings, manager: EngineManager) -> Iterator[LiveServer]:
    """The shared server, on the session's manager (models already loaded stay loaded)."""
    with LiveServer(settings, manager) as live:
        yield live
