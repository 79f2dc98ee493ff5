"""Helpers shared by the benchmarks: the corpus, the raw baseline, the server, tables."""

from __future__ import annotations

import csv
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tables.markdown import markdown_table  # bench/tables/: shared with the README

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("STTS_CORPUS", ROOT.parent / "shared" / "corpus"))
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from stts.testing import free_port, spawn_server  # noqa: E402

__all__ = ["free_port", "markdown_table"]


@dataclass(frozen=True)
class Item:
    """One manifest row."""

    path: Path
    duration: float
    reference: str


def corpus(include_raw: bool = False) -> list[Item]:
    """Corpus files with references (headerless .raw skipped unless asked)."""
    with (CORPUS / "manifest.tsv").open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    items = [Item(CORPUS / r["file"], float(r["duration_s"]), r["reference_text"]) for r in rows]
    return [i for i in items if include_raw or i.path.suffix != ".raw"]


def machine() -> str:
    """One line describing where the numbers come from."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM; ru_maxrss would carry the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def embedded_base() -> Path:
    """The embedded Whisper base model directory (assembled in the cache on first use)."""
    from stts.config import Settings
    from stts.engines.whisper import EMBEDDED_MODELS, assemble_embedded_model

    return assemble_embedded_model(EMBEDDED_MODELS["base"], Settings().cache_dir)


def raw_whisper(path: Path | None = None) -> Any:
    """The baseline: faster-whisper's own WhisperModel on the embedded base model, int8,
    all cores, the same weights and settings the server uses by default."""
    from faster_whisper import WhisperModel

    path = path or embedded_base()
    return WhisperModel(
        str(path), device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 1
    )


def raw_transcribe(model: Any, path: Path) -> tuple[str, float]:
    """One file through raw faster-whisper as the server is set up (beam 5, language en):
    the text and the audio's duration."""
    segments, info = model.transcribe(str(path), language="en", beam_size=5)
    return " ".join(s.text.strip() for s in segments), info.duration


def raw_pass(model: Any, items: list[Item]) -> tuple[float, list[float]]:
    """The baseline's pass over ``items``, one after another: wall seconds and each
    file's latency. Warm the model first (:func:`raw_transcribe` once) as the server is."""
    latencies = []
    t0 = time.perf_counter()
    for item in items:
        started = time.perf_counter()
        raw_transcribe(model, item.path)
        latencies.append(time.perf_counter() - started)
    return time.perf_counter() - t0, latencies


def rates(requests: int, audio_s: float, wall: float) -> list[float]:
    """requests/s and audio seconds per second for ``requests`` done in ``wall`` seconds."""
    return [requests / wall, audio_s / wall]


def start_server(port: int, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A real ``stts serve`` on 127.0.0.1:port (warnings-only logs), once ready."""
    return spawn_server(port, {"STTS_LOG_LEVEL": "warning", **(extra_env or {})}, stderr=None)


def post(client: httpx.Client, url: str, path: Path) -> float:
    """Client wall seconds for one /v1/audio/transcriptions request."""
    return post_timed(client, url, path)[0]


def post_timed(client: httpx.Client, url: str, path: Path) -> tuple[float, dict[str, float]]:
    """Client wall seconds and the server's Server-Timing stages (ms)."""
    t0 = time.perf_counter()
    r = client.post(
        url,
        files={"file": (path.name, path.read_bytes())},
        data={"model": "whisper-1", "language": "en"},
        timeout=600,
    )
    wall = time.perf_counter() - t0
    r.raise_for_status()
    stages = {}
    for part in r.headers.get("server-timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            stages[name] = float(dur)
    return wall, stages
