"""PocketSphinx's native decoder can crash (SIGSEGV inside ``process_raw``: CI, and once
more in test_wyoming, during a live stream's step); a server must outlive it.

With ``pocketsphinx.isolate`` on (a server's default) live streams decode in a child
process of the engine instance, like whole recordings: a crash there fails the streams
that child held, with a clean error, and the next stream starts a fresh child. The crash
is injected by signalling the child (FAULT INJECTION: SIGSEGV, what a native crash
delivers), since the decoder's own crash could not be reproduced on demand.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import numpy as np
import psutil
import pytest

from stts.audio import SAMPLE_RATE, AudioArray, decode_audio
from stts.config import Settings
from stts.engines.base import TranscribeOptions
from stts.engines.pocketsphinx import PocketSphinxEngine
from stts.engines.streaming import EngineStream
from stts.errors import SttsError, TranscriptionFailed
from stts.service import EngineManager
from stts.streams import LiveStream
from tests.conftest import CORPUS_ITEMS, corpus_file, requires_corpus

pytestmark = [requires_corpus]

GOFORWARD = "pocketsphinx__goforward.raw"
PIECE = SAMPLE_RATE // 10  # 100 ms, as a live client sends it
EN = TranscribeOptions(language="en")


def _audio(name: str) -> AudioArray:
    item = next(i for i in CORPUS_ITEMS if i.path.name == name)
    return decode_audio(corpus_file(name), raw=item.raw).samples


def _isolated(settings: Settings, isolate: bool) -> Settings:
    section = settings.pocketsphinx.model_copy(update={"isolate": isolate})
    return settings.model_copy(update={"engines": ["pocketsphinx"], "pocketsphinx": section})


def _stream_text(stream: EngineStream, audio: AudioArray) -> str:
    try:
        for start in range(0, len(audio), PIECE):
            stream.accept(audio[start : start + PIECE])
        stream.finish()
        return stream.transcript().text
    finally:
        stream.close()


def _stream_children(manager: EngineManager) -> list[int]:
    """Process ids of the children that hold the PocketSphinx instances' live streams."""
    slot = manager.slot(manager.resolve("pocketsphinx"))
    hosts = [engine._stream_process for engine in slot._all_instances]  # type: ignore[attr-defined]
    return [host.pid for host in hosts if host is not None and host.pid is not None]


@pytest.fixture(scope="module")
def isolated(settings: Settings) -> Iterator[EngineManager]:
    with EngineManager(_isolated(settings, True)).session() as manager:
        yield manager


def test_an_isolated_engine_streams_in_a_child_what_it_streams_in_process(
    settings: Settings,
) -> None:
    """The child runs the same stream code on the same pieces: the same transcript."""
    audio = _audio(GOFORWARD)
    texts = []
    for isolate in (True, False):
        engine = PocketSphinxEngine(_isolated(settings, isolate))
        engine.load()
        try:
            texts.append(_stream_text(engine.open_stream(EN), audio))
            host = engine._stream_process
            if isolate:
                assert host is not None and host.pid not in (None, os.getpid())
                assert psutil.Process(host.pid).ppid() != 0  # a live child, not this process
            else:
                assert host is None
        finally:
            engine.close()
    assert texts[0] == texts[1] and "forward" in texts[0], texts


async def _live(manager: EngineManager, audio: AudioArray, crash_at: float | None) -> str:
    """Through the service, as a face does; with ``crash_at`` the stream's child gets
    SIGSEGV once that many seconds have been decoded."""
    key = manager.resolve("pocketsphinx")
    async with await LiveStream.open(manager, key, EN) as stream:
        for start in range(0, len(audio), PIECE):
            stream.push(audio[start : start + PIECE])
            while stream.backlog_s > 0 and stream.error is None:
                await asyncio.sleep(0.005)
            if stream.error is not None:
                raise stream.error
            if crash_at is not None and start >= crash_at * SAMPLE_RATE:
                children = _stream_children(manager)
                assert children, "the stream decodes in this process"
                for pid in children:  # FAULT INJECTION: a native crash in the decoder
                    os.kill(pid, signal.SIGSEGV)
                crash_at = None
        _, transcript = await stream.finish()
        return transcript.text


def test_a_native_crash_in_a_live_stream_fails_that_stream_not_the_process(
    isolated: EngineManager,
) -> None:
    audio = _audio(GOFORWARD)
    with pytest.raises(SttsError) as failed:
        asyncio.run(_live(isolated, audio, crash_at=1.0))
    assert isinstance(failed.value, TranscriptionFailed), failed.value
    slot = isolated.slot(isolated.resolve("pocketsphinx"))
    assert slot.open_streams == 0
    # The next stream starts a fresh child and decodes as before.
    assert asyncio.run(_live(isolated, audio, crash_at=None)) == "go forward ten meters"
    assert _stream_children(isolated)


def test_a_stream_that_begins_with_digital_silence_still_hears_the_speech(
    settings: Settings,
) -> None:
    """The first 1.5 s give the stream its cepstral mean; over digital zeros PocketSphinx's
    batch mean divides by zero (NaN, read back as 0) and the speech after it was misheard
    ("roared years see"). The model's initial mean is used instead."""
    audio = np.concatenate([np.zeros(2 * SAMPLE_RATE, np.float32), _audio(GOFORWARD)])
    engine = PocketSphinxEngine(_isolated(settings, False))
    engine.load()
    try:
        text = _stream_text(engine.open_stream(EN), audio)
    finally:
        engine.close()
    assert text.startswith("go forward ten"), text


class _CallSizes:
    """FAULT INJECTION (a spy): a PocketSphinx decoder that records how many samples each
    live ``process_raw`` call gets."""

    def __init__(self, decoder: object) -> None:
        self._decoder = decoder
        self.live: list[int] = []

    def __getattr__(self, name: str) -> object:
        method = getattr(self._decoder, name)
        if name != "process_raw":
            return method

        def process_raw(data: bytes, no_search: bool = False, full_utt: bool = False) -> object:
            if not full_utt:
                self.live.append(len(data) // 2)
            return method(data, no_search, full_utt)

        return process_raw


def test_a_stream_given_seconds_at_once_feeds_its_decoder_a_second_at_a_time(
    settings: Settings,
) -> None:
    """The SIGSEGV of test_wyoming: a loaded server gave a stream's first step 5 s of
    backlog and its second 2.5 s. The priming pass had sized PocketSphinx's ring of
    cepstra to the 5 s; fed in one call, the ring wrapped with more than the 256 cepstra
    its live feature pass takes at once, and it read rows past the ring's end (SIGSEGV in
    cmn_live, or garbage cepstra when that memory was mapped: the transcript then ended
    "you were young and three"). Each live call now gets at most a second."""
    audio = _audio("openai-whisper__jfk.flac")
    engine = PocketSphinxEngine(_isolated(settings, False))
    engine.load()
    try:
        stream = engine.open_stream(EN)
        spy = _CallSizes(stream._decoder)  # type: ignore[attr-defined]
        stream._decoder = spy  # type: ignore[attr-defined]
        start = 0
        try:
            for size in (80_896, 39_936, 40_960, len(audio)):  # as the trace had them
                stream.accept(audio[start : start + size])
                start += size
            stream.finish()
            text = stream.transcript().text
        finally:
            stream.close()
    finally:
        engine.close()
    assert spy.live and max(spy.live) <= SAMPLE_RATE, spy.live
    assert text.endswith("can do for your country"), text
