"""Cross-request batching and fair scheduling for Whisper (real model)."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from stts.audio import SAMPLE_RATE, decode_audio
from stts.config import Settings
from stts.engines.base import TranscribeOptions
from stts.engines.whisper_batching import split_windows
from stts.evaluation import word_error_rate
from stts.service import EngineManager
from tests.conftest import CORPUS_ITEMS, LiveServer, corpus_file, requires_corpus


def test_windows_are_at_most_30_s_contiguous_and_cut_in_silence() -> None:
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(SAMPLE_RATE * 75)).astype(np.float32)
    for gap in (27.5, 54.0):  # quiet stretches where a cut should land
        audio[int(gap * SAMPLE_RATE) : int((gap + 0.3) * SAMPLE_RATE)] = 0.0
    windows = split_windows(audio)
    assert windows[0][0] == 0 and windows[-1][1] == len(audio)
    for (_, end), (start, _) in zip(windows, windows[1:], strict=False):
        assert end == start
    assert all(0 < (e - s) <= 30 * SAMPLE_RATE for s, e in windows)
    cuts = [end / SAMPLE_RATE for _, end in windows[:-1]]
    assert 27.5 <= cuts[0] <= 27.8 and 54.0 <= cuts[1] <= 54.3
    assert split_windows(audio[: SAMPLE_RATE * 5]) == [(0, SAMPLE_RATE * 5)]


@pytest.fixture(scope="module")
def batched(cache_dir: Path) -> Iterator[EngineManager]:
    # Deadlines are not what these tests check: a loaded 2-core machine is slow, not broken.
    settings = Settings(
        cache_dir=cache_dir, engines=["whisper"], whisper={"batch_size": 4}, timeout_base_s=900
    )
    mgr = EngineManager(settings)
    yield mgr
    mgr.close()


@pytest.mark.slow
@requires_corpus
def test_concurrent_requests_are_batched_and_accurate(batched: EngineManager) -> None:
    items = CORPUS_ITEMS[:12]
    audios = [decode_audio(i.path, raw=i.raw) for i in items]
    options = TranscribeOptions(language="en")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda a: batched.transcribe(a, options=options), audios))
    wer = word_error_rate([i.reference for i in items], [r.text for r in results])
    assert wer < 0.2, wer
    batcher = batched.slot(("whisper", "base"))._all_instances[0]._batcher  # type: ignore[attr-defined]
    assert batcher is not None
    assert batcher.windows_decoded >= len(items)
    assert batcher.batches < batcher.windows_decoded, "no two windows were ever decoded together"


@pytest.mark.slow
@requires_corpus
def test_long_audio_is_windowed_with_offsets(batched: EngineManager) -> None:
    parts = [
        decode_audio(corpus_file(n)).samples
        for n in (
            "openai-whisper__jfk.flac",
            "coqui-tts__LJ001-0001.wav",
            "coqui-tts__LJ001-0003.flac",
            "ort-extensions__1272-141231-0002.mp3",
        )
    ]
    gap = np.zeros(SAMPLE_RATE, np.float32)
    long_audio = np.concatenate([p for part in parts for p in (part, gap)])  # ~48 s: 2 windows
    result = batched.transcribe(
        long_audio, options=TranscribeOptions(language="en", word_timestamps=True)
    )
    text = result.text.lower()
    assert "your country" in text and "spectators" in text
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and result.segments[-1].end > 35
    assert [s.id for s in result.segments] == list(range(len(result.segments)))


@pytest.mark.slow
@requires_corpus
def test_short_request_finishes_while_a_long_one_is_running(cache_dir: Path) -> None:
    settings = Settings(
        cache_dir=cache_dir, engines=["whisper"], whisper={"batch_size": 2}, timeout_base_s=900
    )
    clip = decode_audio(corpus_file("coqui-tts__LJ001-0001.wav")).samples
    long_audio = np.tile(clip, 16)  # ~155 s: 6 windows
    short = corpus_file("pocketsphinx__001.wav").read_bytes()
    finished: dict[str, float] = {}
    with LiveServer(settings) as live:

        def post(name: str, data: bytes, filename: str) -> None:
            r = httpx.post(
                f"{live.url}/api/v1/stt?language=en",
                files={"speech": (filename, data)},
                timeout=300,
            )
            assert r.status_code == 200, r.text
            finished[name] = time.monotonic()

        wav = _wav_bytes(long_audio)
        long_thread = threading.Thread(target=post, args=("long", wav, "long.wav"))
        long_thread.start()
        engines = f"{live.url}/api/v1/engines"
        deadline = time.monotonic() + 120
        while httpx.get(engines).json()["details"]["whisper"]["in_flight"] < 1:
            assert time.monotonic() < deadline, "the long request never started"
            time.sleep(0.05)
        post("short", short, "short.wav")
        long_thread.join(300)
    assert finished["short"] < finished["long"]


def _wav_bytes(samples: np.ndarray) -> bytes:
    import io
    import wave

    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()
