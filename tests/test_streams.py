"""The streaming contract and the service's live streams: LocalAgreement, the repetition
guard, Silero VAD, and LiveStream's admission, backlog and clean-up (issue 12)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from stts.audio import SAMPLE_RATE, AudioArray, decode_audio
from stts.config import Settings
from stts.engines.base import Capabilities, TranscribeOptions
from stts.engines.registry import register_engine, unregister_engine
from stts.engines.streaming import EngineStream, LocalAgreement, RepetitionGuard, StreamUpdate
from stts.errors import AudioTooLong, Overloaded
from stts.evaluation import word_error_rate
from stts.service import EngineManager
from stts.streams import LiveStream
from stts.transcript import Transcript, Word
from stts.vad import SileroVad, VadStream
from tests.conftest import CORPUS_ITEMS, corpus_file, requires_corpus
from tests.fault_engines import FaultEngine, undecoded_whisper_stream

JFK = "openai-whisper__jfk.flac"


def _words(*spec: tuple[float, float, str]) -> list[Word]:
    return [Word(s, e, t) for s, e, t in spec]


def test_local_agreement_commits_only_what_two_hypotheses_share() -> None:
    agreement = LocalAgreement()
    first = agreement.insert(_words((0, 0.5, " And"), (0.5, 0.9, " so...")))
    assert first.committed == () and first.tentative == "And so..."
    second = agreement.insert(_words((0, 0.5, " And"), (0.5, 0.9, " so"), (1, 1.3, " my")))
    assert second.text == "And so"  # punctuation and case do not break agreement
    # Whisper re-reads the audio it is given: the committed words come back first.
    third = agreement.insert(
        _words((0, 0.5, " And"), (0.5, 0.9, " so"), (1, 1.3, " my"), (1.4, 1.8, " fellow"))
    )
    assert third.text == " my" and third.tentative == "fellow"
    last = agreement.flush(_words((0.5, 0.9, " so"), (1, 1.3, " my"), (1.4, 1.8, " fellow.")))
    assert last.text == " fellow."
    transcript = agreement.transcript(2.0, "en", "base")
    assert transcript.text == "And so my fellow."
    assert transcript.text == "".join(u.text for u in (first, second, third, last))


def test_repetition_guard_drops_loops_not_ordinary_repeats() -> None:
    guard = RepetitionGuard()
    looping = guard.filter(_words(*((i, i + 0.1, " you") for i in range(10))))
    assert [w.word for w in looping] == [" you"] * 4
    phrase = ["thank", "you", "so", "much"]
    words = [Word(i, i + 0.1, " " + w) for i, w in enumerate(phrase * 5)]
    kept = RepetitionGuard().filter(words)
    assert len(kept) == 3 * len(phrase)  # the phrase three times, not five
    ordinary = _words((0, 1, " that"), (1, 2, " that"), (2, 3, " is"), (3, 4, " it"))
    assert RepetitionGuard().filter(ordinary) == ordinary
    digits = [
        Word(i, i + 0.5, " " + w) for i, w in enumerate(["one", "zero", "zero", "zero", "one"])
    ]
    assert RepetitionGuard().filter(digits) == digits  # speech, not a loop


def test_repeat_start_finds_the_first_loop_of_the_sizes_asked() -> None:
    from stts.engines.repetition import repeat_start

    tokens = ["she", "said", "go", "go", "go", "go", "then", "stop", "then", "stop", "then", "stop"]
    assert repeat_start(tokens, 4, 1, 3) == 3  # "go" four times: the loop starts at copy 2
    assert repeat_start(tokens, 3, 2, 3) == 8  # single words not asked for: "then stop"
    assert repeat_start(tokens, 4, 2, 3) is None  # "then stop" only three times
    assert repeat_start([], 3, 1, 3) is None


@requires_corpus
def test_silero_vad_finds_speech_and_the_pause_between() -> None:
    speech = decode_audio(corpus_file(JFK)).samples
    gap = np.zeros(2 * SAMPLE_RATE, np.float32)
    audio = np.concatenate([gap, speech, gap, speech, gap])
    vad = VadStream(SileroVad.shared(), silence_duration_ms=1500)
    events = []
    for start in range(0, len(audio), 1600):  # 100 ms pieces
        events += vad.accept(audio[start : start + 1600])
    kinds = [e.kind for e in events]
    assert kinds == ["start", "stop", "start", "stop"], events
    first_start, first_stop, second_start, _ = (e.sample / SAMPLE_RATE for e in events)
    assert 1.5 < first_start < 3.0  # the speech starts at 2 s
    assert 2 + len(speech) / SAMPLE_RATE - 1 < first_stop < second_start
    quiet = VadStream(SileroVad.shared())
    assert quiet.accept(np.zeros(SAMPLE_RATE * 3, np.float32)) == []


# -- LiveStream on a FAULT-INJECTION streaming engine ------------------------------------


class _EchoStream(EngineStream):
    """Commits one word per accepted piece; counts live streams (fault injection)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.words: list[Word] = []
        self.samples = 0
        EchoStreamEngine.open += 1

    def accept(self, samples: AudioArray) -> StreamUpdate:
        import time

        time.sleep(self.delay)
        start = self.samples / SAMPLE_RATE
        self.samples += len(samples)
        word = Word(start, self.samples / SAMPLE_RATE, (" " if self.words else "") + "word")
        self.words.append(word)
        return StreamUpdate((word,), "tentative")

    def finish(self) -> StreamUpdate:
        return StreamUpdate((), "")

    def transcript(self) -> Transcript:
        return Transcript("".join(w.word for w in self.words), (), self.samples / SAMPLE_RATE)

    def close(self) -> None:
        EchoStreamEngine.open -= 1


class EchoStreamEngine(FaultEngine):
    """FAULT-INJECTION streaming engine: a word per piece, ``delay`` seconds per step."""

    name = "fault-echo-stream"
    delay: ClassVar[float] = 0.0
    open: ClassVar[int] = 0

    def transcribe(self, audio, options, *, on_segment=None, cancel=None):  # type: ignore[no-untyped-def]
        raise AssertionError("streams only")

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        return _EchoStream(type(self).delay)


@pytest.fixture
def echo_manager(tmp_path: Path) -> Iterator[EngineManager]:
    register_engine(EchoStreamEngine.name, EchoStreamEngine)
    EchoStreamEngine.delay, EchoStreamEngine.open = 0.0, 0
    settings = Settings(
        cache_dir=tmp_path,
        engines=[EchoStreamEngine.name],
        default_engine=EchoStreamEngine.name,
        plugins={EchoStreamEngine.name: {"workers": 1, "max_streams": 2}},
    )
    settings.streaming.max_backlog_s = 2.0
    settings.streaming.max_duration_s = 30.0
    manager = EngineManager(settings)
    try:
        yield manager
    finally:
        manager.close()
        unregister_engine(EchoStreamEngine.name)


TENTH = np.full(SAMPLE_RATE // 10, 0.1, np.float32)


def test_live_stream_updates_then_final_transcript(echo_manager: EngineManager) -> None:
    async def run() -> tuple[list[StreamUpdate], StreamUpdate, Transcript]:
        key = echo_manager.resolve(None)
        async with await LiveStream.open(echo_manager, key, TranscribeOptions()) as stream:
            for _ in range(5):
                stream.push(TENTH)
                await asyncio.sleep(0.01)
            last, transcript = await stream.finish()
            return stream.drain_updates(), last, transcript

    updates, last, transcript = asyncio.run(run())
    assert updates and all(u.tentative == "tentative" for u in updates)
    assert "".join(u.text for u in updates) + last.text == transcript.text
    assert transcript.engine == EchoStreamEngine.name
    assert transcript.duration == pytest.approx(0.5)
    assert EchoStreamEngine.open == 0  # the engine stream was closed


def test_streams_over_max_streams_are_refused_and_places_come_back(
    echo_manager: EngineManager,
) -> None:
    key = echo_manager.resolve(None)

    async def run() -> None:
        first = await LiveStream.open(echo_manager, key, TranscribeOptions())
        second = await LiveStream.open(echo_manager, key, TranscribeOptions())
        with pytest.raises(Overloaded):
            await LiveStream.open(echo_manager, key, TranscribeOptions())
        await first.close()
        third = await LiveStream.open(echo_manager, key, TranscribeOptions())
        await second.close()
        await third.close()
        await third.close()  # idempotent

    asyncio.run(run())
    assert echo_manager.slot(key).open_streams == 0
    assert EchoStreamEngine.open == 0


def test_audio_faster_than_the_engine_gets_an_error_not_memory(
    echo_manager: EngineManager,
) -> None:
    """FAULT-INJECTION: each step takes 0.2 s; 10 s of audio pushed at once overflows the
    2 s backlog: an Overloaded error, and the stream keeps refusing."""
    EchoStreamEngine.delay = 0.2

    async def run() -> int:
        key = echo_manager.resolve(None)
        async with await LiveStream.open(echo_manager, key, TranscribeOptions()) as stream:
            pushed = 0
            with pytest.raises(Overloaded):
                for _ in range(100):
                    stream.push(TENTH)
                    pushed += 1
            with pytest.raises(Overloaded):
                stream.push(TENTH)
            return pushed

    pushed = asyncio.run(run())
    assert pushed <= 21  # 2 s of backlog, then refused
    assert EchoStreamEngine.open == 0


def test_a_stream_is_bounded_in_length(echo_manager: EngineManager) -> None:
    async def run() -> None:
        key = echo_manager.resolve(None)
        async with await LiveStream.open(echo_manager, key, TranscribeOptions()) as stream:
            with pytest.raises(AudioTooLong):
                for _ in range(400):
                    stream.push(TENTH)
                    await asyncio.sleep(0)
                    await stream._idle.wait()

    asyncio.run(run())


class _HomedStream(_EchoStream):
    def __init__(self, home: PerWorkerStreamEngine) -> None:
        super().__init__(0.0)
        self.home = home
        home.holding += 1

    def close(self) -> None:
        self.home.holding -= 1
        super().close()


class PerWorkerStreamEngine(EchoStreamEngine):
    """FAULT-INJECTION streaming engine that is not thread-safe (an instance per worker,
    as PocketSphinx): each instance counts the streams it holds."""

    name = "fault-per-worker-stream"

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        super().__init__(settings, model)
        self.holding = 0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(languages=frozenset({"en"}), streaming=True, thread_safe=False)

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        return _HomedStream(self)


@contextlib.contextmanager
def _two_workers(tmp_path: Path, engine: type[EchoStreamEngine]) -> Iterator[EngineManager]:
    """A manager of one FAULT-INJECTION streaming engine with 2 workers (registered for
    the block)."""
    register_engine(engine.name, engine)
    settings = Settings(
        cache_dir=tmp_path,
        engines=[engine.name],
        default_engine=engine.name,
        plugins={engine.name: {"workers": 2, "max_streams": 4}},
    )
    manager = EngineManager(settings)
    try:
        yield manager
    finally:
        manager.close()
        unregister_engine(engine.name)


def test_streams_are_spread_over_an_engine_s_instances(tmp_path: Path) -> None:
    """A stream stays on the instance that opened it (PocketSphinx: the child process that
    holds its decoder), so streams go to the instance holding the fewest, not to whichever
    the free-worker queue hands out next: after one step of the first stream, the queue
    had the first stream's instance at its head again (both streams in one child, one
    core, the other idle)."""
    with _two_workers(tmp_path, PerWorkerStreamEngine) as manager:
        key = manager.resolve(None)

        async def step(stream: LiveStream) -> None:
            stream.push(TENTH)
            await asyncio.sleep(0)
            await stream._idle.wait()

        async def run() -> list[list[int]]:
            held = []
            first = await LiveStream.open(manager, key, TranscribeOptions())
            await step(first)
            second = await LiveStream.open(manager, key, TranscribeOptions())
            await step(second)
            instances = manager.slot(key)._all_instances
            held.append([i.holding for i in instances])  # type: ignore[attr-defined]
            await first.close()
            third = await LiveStream.open(manager, key, TranscribeOptions())  # where first was
            held.append([i.holding for i in instances])  # type: ignore[attr-defined]
            for stream in (second, third):
                await stream.close()
            held.append([i.holding for i in instances])  # type: ignore[attr-defined]
            return held

        assert asyncio.run(run()) == [[1, 1], [1, 1], [0, 0]]


class _SlowHomedStream(_HomedStream):
    def accept(self, samples: AudioArray) -> StreamUpdate:
        import time

        time.sleep(1.0)
        return super().accept(samples)


class SlowPerWorkerStreamEngine(PerWorkerStreamEngine):
    """FAULT-INJECTION: PerWorkerStreamEngine whose stream steps take 1 s (a stuck step)."""

    name = "fault-slow-per-worker-stream"

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        return _SlowHomedStream(self)


def test_a_stream_closed_during_a_step_is_closed_when_the_step_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Close gives up waiting for a step still running (here after 0.2 s): the place comes
    back at once, and the engine stream is closed, and its instance counted out, when the
    step returns (before, it was never closed: a PocketSphinx child kept its decoder)."""
    import time

    from stts import streams

    monkeypatch.setattr(streams, "_STEP_TIMEOUT_S", 0.2)
    with _two_workers(tmp_path, SlowPerWorkerStreamEngine) as manager:
        key = manager.resolve(None)
        slot = manager.slot(key)

        async def run() -> None:
            stream = await LiveStream.open(manager, key, TranscribeOptions())
            stream.push(TENTH)
            await asyncio.sleep(0.05)  # the step is running
            await stream.close()

        asyncio.run(run())
        assert slot.open_streams == 0
        instances = slot._all_instances
        for _ in range(300):  # the step returns after 1 s
            if not slot.stream_homes.homes:
                break
            time.sleep(0.1)
        assert slot.stream_homes.homes == {} and [i.holding for i in instances] == [0, 0]  # type: ignore[attr-defined]


@pytest.mark.parametrize("early", [False, True], ids=["default", "early_passes"])
def test_whisper_passes_come_sooner_while_nothing_is_heard_and_silence_is_cut(
    monkeypatch: pytest.MonkeyPatch, early: bool
) -> None:
    """FAULT-INJECTION decode (no model): the passes hear nothing for the first 6 s, then
    a word. After a pass that heard nothing (and with ``early_passes`` until the first
    commit) the next comes after half of ``min_chunk``, so the first words show sooner
    after speech begins; and after a pass that heard nothing a buffer of more than 3 s is
    cut to its last 1.5 s, so a silent lead-in is not decoded again and again."""
    stream = undecoded_whisper_stream(min_chunk_s=1.0, early_passes=early)
    passes: list[tuple[float, float]] = []  # (stream time, buffer seconds) per pass

    def fault_injected_decode(final: bool) -> list[Word]:
        now = stream.total / SAMPLE_RATE
        passes.append((round(now, 1), round(len(stream.buffer) / SAMPLE_RATE, 1)))
        return [] if now <= 6.0 else [Word(now - 0.4, now - 0.1, " word")]

    monkeypatch.setattr(stream, "_decode", fault_injected_decode)
    for _ in range(80):  # 8 s in 100 ms pieces
        stream.accept(TENTH)
    # Every 0.5 s while nothing is heard; the second hypothesis (two agree: a commit)
    # 0.5 s after the first with early passes, else 1 s; then every 1 s.
    heard = [7.0, 8.0] if early else [7.5]
    # With early passes the first pass comes after 0.5 s too.
    assert [t for t, _ in passes] == [x / 2 for x in range(1 if early else 2, 14)] + heard
    silent = [b for t, b in passes if t <= 6.0]
    assert max(silent) == 3.5 and silent.count(3.5) == 2  # cut at 3.5 s and 5.5 s
    assert passes[-1][1] <= 5.0  # (the 6.5 s pass heard a word: not cut)


# -- Whisper streamed like a live speaker ------------------------------------------------


@pytest.mark.slow
@requires_corpus
def test_whisper_stream_commits_append_only_and_matches_offline(manager: EngineManager) -> None:
    audio = decode_audio(corpus_file(JFK)).samples
    reference = next(i.reference for i in CORPUS_ITEMS if i.path.name == JFK)
    offline = manager.transcribe(audio, options=TranscribeOptions(language="en"))

    async def run() -> tuple[str, Transcript]:
        key = manager.resolve("whisper")
        options = TranscribeOptions(language="en")
        async with await LiveStream.open(manager, key, options) as stream:
            texts = []
            for start in range(0, len(audio), 1600):
                stream.push(audio[start : start + 1600])
                await stream._idle.wait()  # as fast as the engine goes, in order
                texts += [u.text for u in stream.drain_updates()]
            last, transcript = await stream.finish()
            texts.append(last.text)
            return "".join(texts), transcript

    streamed, transcript = asyncio.run(run())
    assert streamed.strip() == transcript.text
    wer_stream = word_error_rate([reference], [transcript.text])
    wer_offline = word_error_rate([reference], [offline.text])
    assert wer_stream <= wer_offline + 0.1, (transcript.text, offline.text)
