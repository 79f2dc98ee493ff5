"""The OpenAI Realtime transcription WebSocket (/v1/realtime), on a real server.

Most tests run on a deterministic streaming fake (one committed word per half second
of audio, so every count is known); the VAD tests feed it real speech, because Silero
needs speech to find. The Whisper tests (``slow``) stream corpus audio at real-time
pace and compare the streamed transcript with the offline one.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest
import soxr
import websockets
from websockets.asyncio.client import ClientConnection, connect

from stts.audio import decode_audio
from stts.config import Settings
from stts.engines.base import Capabilities, TranscribeOptions
from stts.engines.registry import register_engine, unregister_engine
from stts.engines.streaming import EngineStream, StreamUpdate
from stts.evaluation import normalize_text, word_error_rate
from stts.pcm import ALAW_TO_PCM16, ULAW_TO_PCM16, PcmConverter
from stts.transcript import Transcript, Word
from tests.conftest import LiveServer, corpus_file
from tests.fault_engines import TONE_SECOND, FaultEngine

OPENAI_SERVER_EVENTS = {
    "session.created",
    "session.updated",
    "transcription_session.created",
    "transcription_session.updated",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.created",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed",
    "error",
}
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
TENTATIVE = "stts.input_audio_transcription.tentative"


# -- a deterministic streaming engine ---------------------------------------------


class CountingStream(EngineStream):
    """Commits one word per half second of audio ("w1", " w2"…); "end." at finish."""

    def __init__(self, delay: float) -> None:
        self.samples = 0
        self.words: list[Word] = []
        self.delay = delay

    def _word(self, text: str) -> Word:
        n = len(self.words)
        return Word(n * 0.5, n * 0.5 + 0.5, text if not self.words else " " + text, 1.0)

    def accept(self, samples: np.ndarray) -> StreamUpdate:
        if self.delay:
            time.sleep(self.delay)
        self.samples += len(samples)
        new = []
        while len(self.words) < self.samples // 8000:
            word = self._word(f"w{len(self.words) + 1}")
            self.words.append(word)
            new.append(word)
        return StreamUpdate(tuple(new), f"maybe{len(self.words) + 1}")

    def finish(self) -> StreamUpdate:
        word = self._word("end.")
        self.words.append(word)
        return StreamUpdate((word,), "")

    def transcript(self) -> Transcript:
        text = "".join(w.word for w in self.words).strip()
        return Transcript(text, (), self.samples / 16000, "en", model="fake")


class CountingEngine(FaultEngine):
    """FAULT-INJECTION: a streaming engine whose output depends only on the audio length;
    ``delay`` seconds per step make it slower than real time."""

    name = "fault-counting"
    delay: ClassVar[float] = 0.0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(languages=frozenset({"en"}), thread_safe=True, streaming=True)

    def transcribe(self, audio, options, *, on_segment=None, cancel=None):  # type: ignore[no-untyped-def]
        return Transcript("w1", (), len(audio) / 16000, "en", model="fake")

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        return CountingStream(type(self).delay)


def fake_settings(tmp: Path, **overrides: Any) -> Settings:
    """One engine, the fake; short limits where a test needs them."""
    values: dict[str, Any] = {
        "cache_dir": tmp,
        "engines": ["fault-counting", "whisper"],
        "default_engine": "fault-counting",
        "model_aliases": {name: "fault-counting" for name in ("whisper-1", "gpt-4o-transcribe")},
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def fake_engine() -> Iterator[None]:
    register_engine(CountingEngine.name, CountingEngine)
    try:
        yield
    finally:
        unregister_engine(CountingEngine.name)


@pytest.fixture(scope="module")
def fake_server(
    fake_engine: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    settings = fake_settings(tmp_path_factory.mktemp("rt"), streaming={"idle_timeout_s": 30})
    with LiveServer(settings) as live:
        yield live


# -- audio ----------------------------------------------------------------------


def to_pcm16(samples: np.ndarray, rate: int) -> bytes:
    """16 kHz float32 -> PCM16 LE at ``rate``."""
    if rate != 16000:
        samples = soxr.resample(samples, 16000, rate)
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def g711(samples: np.ndarray, table: np.ndarray) -> bytes:
    """16 kHz float32 -> G.711 at 8 kHz: each sample's nearest code in the decode table."""
    linear = soxr.resample(samples, 16000, 8000) * 32768
    order = np.argsort(table)
    ordered = table[order].astype(np.float64)
    idx = np.clip(np.searchsorted(ordered, linear), 1, 255)
    nearer_left = np.abs(linear - ordered[idx - 1]) <= np.abs(linear - ordered[idx])
    return order[np.where(nearer_left, idx - 1, idx)].astype(np.uint8).tobytes()


def speech(name: str) -> np.ndarray:
    return decode_audio(corpus_file(name).read_bytes()).samples


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- a client -------------------------------------------------------------------


class Client:
    """A plain `websockets` client that records every event it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def append(self, data: bytes, chunk: int = 4800, pace: float = 0.0) -> None:
        for i in range(0, len(data), chunk):
            await self.send(
                {"type": "input_audio_buffer.append", "audio": b64(data[i : i + chunk])}
            )
            if pace:
                await asyncio.sleep(pace)

    async def recv(self, timeout: float = 30) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        assert isinstance(event.get("event_id"), str) and event["event_id"].startswith("event_")
        self.events.append(event)
        return event

    async def until(self, kind: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        """Events received until the ``count``-th of type ``kind`` (inclusive)."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while sum(e["type"] == kind for e in got) < count:
            got.append(await self.recv(max(0.1, deadline - time.monotonic())))
        return got

    async def update(self, **audio_input: Any) -> dict[str, Any]:
        await self.send(
            {
                "type": "session.update",
                "session": {"type": "transcription", "audio": {"input": audio_input}},
            }
        )
        return (await self.until("session.updated"))[-1]


def ws_url(live: LiveServer, query: str = "intent=transcription") -> str:
    return f"ws://127.0.0.1:{live.port}/v1/realtime?{query}"


async def session(live: LiveServer, query: str = "intent=transcription", **kw: Any) -> Client:
    ws = await connect(ws_url(live, query), **kw)
    client = Client(ws)
    first = await client.recv()
    assert first["type"] in ("session.created", "transcription_session.created")
    return client


def open_streams(live: LiveServer) -> float:
    """Live streams open on every engine, from /metrics."""
    text = httpx.get(f"{live.url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("stts_engine_open_streams{")
    )


def wait_no_streams(live: LiveServer, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while open_streams(live) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_streams(live) == 0


async def one_item(client: Client, seconds: float = 1.0) -> dict[str, Any]:
    """Manual mode: append, commit, the completed event."""
    await client.append(to_pcm16(np.tile(TONE_SECOND, 3)[: int(16000 * seconds)], 24000))
    await client.send({"type": "input_audio_buffer.commit"})
    return (await client.until(COMPLETED))[-1]


def still_serves(live: LiveServer) -> None:
    """A fresh session transcribes, and no stream is left open."""

    async def check() -> None:
        client = await session(live)
        await client.update(turn_detection=None)
        done = await one_item(client)
        assert done["transcript"] == "w1 w2 end."
        await client.ws.close()

    asyncio.run(check())
    wait_no_streams(live)


# -- pcm ------------------------------------------------------------------------


def test_g711_tables_round_trip_and_converter_rates() -> None:
    assert ULAW_TO_PCM16[0xFF] == 0 and ULAW_TO_PCM16[0x80] == 32124
    assert ALAW_TO_PCM16[0xD5] == 8 and ALAW_TO_PCM16[0x2A] == -32256
    tone = TONE_SECOND
    for table, encoding in ((ULAW_TO_PCM16, "pcmu"), (ALAW_TO_PCM16, "pcma")):
        out = PcmConverter(encoding, 8000).convert(g711(tone, table))  # type: ignore[arg-type]
        assert np.corrcoef(out[2000:6000], tone[2000:6000])[0, 1] > 0.99
    for rate in (8000, 16000, 24000, 48000):
        converter = PcmConverter("pcm16", rate)
        data = to_pcm16(tone, rate)
        pieces = [converter.convert(data[i : i + 777]) for i in range(0, len(data), 777)]
        out = np.concatenate([*pieces, converter.flush()])
        assert abs(len(out) - 16000) <= 2, rate  # odd byte counts carried, tail flushed


# -- the protocol, on the fake engine ---------------------------------------------


def test_defaults_without_session_update(fake_server: LiveServer) -> None:
    async def run() -> None:
        async with connect(ws_url(fake_server, "")) as ws:
            client = Client(ws)
            created = await client.recv()
            assert created["type"] == "session.created"
            sess = created["session"]
            assert sess["type"] == "transcription" and sess["id"].startswith("sess_")
            assert sess["object"] == "realtime.transcription_session"
            audio_in = sess["audio"]["input"]
            assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
            assert audio_in["turn_detection"]["type"] == "server_vad"
            assert audio_in["transcription"]["model"] == "fault-counting:fake"

    asyncio.run(run())


def test_manual_commit_deltas_add_up_to_the_completed_transcript(fake_server: LiveServer) -> None:
    async def run() -> None:
        client = await session(fake_server)
        updated = await client.update(
            turn_detection=None, transcription={"model": "whisper-1", "language": "en"}
        )
        audio_in = updated["session"]["audio"]["input"]
        assert audio_in["turn_detection"] is None
        assert audio_in["transcription"] == {"model": "whisper-1", "language": "en", "prompt": None}
        await client.append(to_pcm16(np.tile(TONE_SECOND, 3), 24000), pace=0.01)
        await client.send({"type": "input_audio_buffer.commit"})
        events = await client.until(COMPLETED)
        kinds = [e["type"] for e in events]
        committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
        item_id = committed["item_id"]
        assert committed["previous_item_id"] is None and item_id.startswith("item_")
        assert kinds.index("conversation.item.added") < kinds.index("conversation.item.done")
        deltas = [e["delta"] for e in client.events if e["type"] == DELTA]
        done = events[-1]
        assert done["item_id"] == item_id and done["content_index"] == 0
        assert done["transcript"] == "".join(deltas) == "w1 w2 w3 w4 w5 w6 end."
        assert len(deltas) >= 2  # words arrived while the audio did
        assert abs(done["usage"]["seconds"] - 3.0) < 0.01 and done["usage"]["type"] == "duration"
        assert not [e for e in client.events if e["type"] not in OPENAI_SERVER_EVENTS]
        # A second item follows the first.
        second = await one_item(client)
        added = [e for e in client.events if e["type"] == "input_audio_buffer.committed"]
        assert added[-1]["previous_item_id"] == item_id and second["item_id"] != item_id
        await client.ws.close()

    asyncio.run(run())
    wait_no_streams(fake_server)


@pytest.mark.parametrize(
    "fmt",
    [
        {"type": "audio/pcm", "rate": 8000},
        {"type": "audio/pcm", "rate": 16000},
        {"type": "audio/pcm", "rate": 24000},
        {"type": "audio/pcm", "rate": 48000},
        {"type": "audio/pcmu"},
        {"type": "audio/pcma"},
    ],
    ids=["pcm8k", "pcm16k", "pcm24k", "pcm48k", "pcmu", "pcma"],
)
def test_every_input_format_gives_the_right_duration(
    fake_server: LiveServer, fmt: dict[str, Any]
) -> None:
    tone = np.tile(TONE_SECOND, 2)
    if fmt["type"] == "audio/pcmu":
        data = g711(tone, ULAW_TO_PCM16)
    elif fmt["type"] == "audio/pcma":
        data = g711(tone, ALAW_TO_PCM16)
    else:
        data = to_pcm16(tone, fmt["rate"])

    async def run() -> None:
        client = await session(fake_server)
        updated = await client.update(format=fmt, turn_detection=None)
        assert updated["session"]["audio"]["input"]["format"] == fmt
        await client.append(data, chunk=3201)  # odd sizes split samples across appends
        await client.send({"type": "input_audio_buffer.commit"})
        done = (await client.until(COMPLETED))[-1]
        assert abs(done["usage"]["seconds"] - 2.0) < 0.01
        assert done["transcript"] == "w1 w2 w3 w4 end."
        await client.ws.close()

    asyncio.run(run())


def test_beta_shape_gets_beta_events(fake_server: LiveServer) -> None:
    async def run() -> None:
        headers = {"OpenAI-Beta": "realtime=v1"}
        client = await session(
            fake_server, "model=gpt-4o-transcribe&intent=transcription", additional_headers=headers
        )
        created = client.events[0]
        assert created["type"] == "transcription_session.created"
        assert created["session"]["input_audio_format"] == "pcm16"
        await client.send(
            {
                "type": "transcription_session.update",
                "session": {
                    "input_audio_format": "g711_ulaw",
                    "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                    "turn_detection": None,
                },
            }
        )
        updated = (await client.until("transcription_session.updated"))[-1]["session"]
        assert updated["input_audio_format"] == "g711_ulaw" and updated["turn_detection"] is None
        assert updated["input_audio_transcription"]["model"] == "whisper-1"
        await client.append(g711(TONE_SECOND, ULAW_TO_PCM16))
        await client.send({"type": "input_audio_buffer.commit"})
        events = await client.until(COMPLETED)
        kinds = {e["type"] for e in events}
        assert "conversation.item.created" in kinds and "conversation.item.added" not in kinds
        assert events[-1]["transcript"] == "w1 w2 end."
        await client.ws.close()

    asyncio.run(run())


def test_a_beta_update_on_a_ga_connection_switches_to_beta_names(fake_server: LiveServer) -> None:
    async def run() -> None:
        client = await session(fake_server)
        await client.send(
            {"type": "transcription_session.update", "session": {"turn_detection": None}}
        )
        updated = (await client.until("transcription_session.updated"))[-1]
        assert updated["session"]["turn_detection"] is None
        await client.ws.close()

    asyncio.run(run())


def test_tentative_text_only_for_clients_that_ask(fake_server: LiveServer) -> None:
    async def run(include: list[str] | None) -> list[dict[str, Any]]:
        client = await session(fake_server)
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"turn_detection": None}},
                    "include": include,
                },
            }
        )
        await client.until("session.updated")
        await one_item(client, 2.0)
        await client.ws.close()
        return client.events

    strict = asyncio.run(run(None))
    assert {e["type"] for e in strict} <= OPENAI_SERVER_EVENTS
    opted = asyncio.run(run(["stts.tentative"]))
    tentative = [e for e in opted if e["type"] == TENTATIVE]
    assert tentative and tentative[0]["text"].startswith("maybe") and "item_id" in tentative[0]
    assert tentative[-1]["text"] == ""  # the item is final: nothing tentative left


def test_server_vad_splits_two_utterances_into_two_items(fake_server: LiveServer) -> None:
    first, second = speech("deepspeech__LDC93S1.wav"), speech("openai-whisper__jfk.flac")[:48000]
    pause = np.zeros(24000, np.float32)
    audio = np.concatenate([pause[:8000], first, pause, second, pause])

    async def run() -> None:
        client = await session(fake_server)
        await client.update(
            turn_detection={
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 700,
            }
        )
        await client.append(to_pcm16(audio, 24000), chunk=4800)
        await client.until(COMPLETED, count=2)
        starts = [e for e in client.events if e["type"] == "input_audio_buffer.speech_started"]
        stops = [e for e in client.events if e["type"] == "input_audio_buffer.speech_stopped"]
        done = [e for e in client.events if e["type"] == COMPLETED]
        assert len(starts) == 2 and len(stops) == 2
        assert [s["item_id"] for s in starts] == [d["item_id"] for d in done]
        # The first utterance (0.5-3.4 s) and the second (4.9 s-) with 300 ms before each.
        assert 0 <= starts[0]["audio_start_ms"] < 700
        assert 3200 < stops[0]["audio_end_ms"] < starts[1]["audio_start_ms"] < 5200
        for d in done:
            deltas = [
                e["delta"]
                for e in client.events
                if e["type"] == DELTA and e["item_id"] == d["item_id"]
            ]
            assert d["transcript"] == "".join(deltas)
        await client.ws.close()

    asyncio.run(run())
    wait_no_streams(fake_server)


# -- bad input --------------------------------------------------------------------


def test_bad_events_get_error_events_and_the_session_goes_on(fake_server: LiveServer) -> None:
    async def run() -> None:
        client = await session(fake_server)

        async def error_for(message: str | bytes) -> dict[str, Any]:
            await client.ws.send(message)
            event = await client.recv()
            assert event["type"] == "error", event
            return dict(event["error"])

        assert (await error_for("{not json"))["code"] == "invalid_json"
        assert (await error_for(b"\x00\x01"))["code"] == "invalid_event"
        assert (await error_for("[1, 2]"))["code"] == "invalid_event"
        unknown = await error_for(json.dumps({"type": "nope", "event_id": "c1"}))
        assert unknown["code"] == "invalid_value" and unknown["param"] == "type"
        assert unknown["event_id"] == "c1" and "session.update" in unknown["message"]
        response = await error_for(json.dumps({"type": "response.create"}))
        assert response["code"] == "invalid_value"
        bad64 = await error_for(json.dumps({"type": "input_audio_buffer.append", "audio": "@@@"}))
        assert bad64["code"] == "invalid_value" and bad64["param"] == "audio"
        big = "A" * (4 * (15 * 1024 * 1024 // 3) + 8)  # a little over 15 MiB once decoded
        too_big = await error_for(json.dumps({"type": "input_audio_buffer.append", "audio": big}))
        assert too_big["code"] == "audio_too_large"
        empty = await error_for(json.dumps({"type": "input_audio_buffer.commit", "event_id": "c2"}))
        assert empty["code"] == "input_audio_buffer_commit_empty" and empty["event_id"] == "c2"
        for session_update, param in (
            ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 12345}}}}, "rate"),
            ({"audio": {"input": {"format": {"type": "audio/flac"}}}}, "format.type"),
            ({"audio": {"input": {"transcription": {"model": "nope"}}}}, "model"),
            ({"audio": {"input": {"transcription": {"language": "xx-nope"}}}}, "language"),
            (
                {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 7}}}},
                "threshold",
            ),
            ({"type": "realtime"}, "session.type"),
        ):
            body = {
                "type": "session.update",
                "session": {"type": "transcription", **session_update},
            }
            error = await error_for(json.dumps(body))
            assert error["type"] == "invalid_request_error" and param in str(error["param"]), error
        # Nothing of the refused updates took: still 24 kHz PCM with server VAD.
        updated = await client.update()
        audio_in = updated["session"]["audio"]["input"]
        assert audio_in["format"]["rate"] == 24000 and audio_in["turn_detection"] is not None
        await client.ws.close()

    asyncio.run(run())
    still_serves(fake_server)


def test_a_message_over_the_size_limit_is_closed_cleanly(fake_server: LiveServer) -> None:
    async def run() -> None:
        client = await session(fake_server, max_size=None)
        audio = b64(bytes(20_000_000))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.send({"type": "input_audio_buffer.append", "audio": audio})
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    asyncio.run(run())
    still_serves(fake_server)


def test_a_client_that_vanishes_mid_utterance_gives_its_stream_back(
    fake_server: LiveServer,
) -> None:
    async def run() -> None:
        client = await session(fake_server)
        await client.update(turn_detection=None)
        await client.append(to_pcm16(TONE_SECOND, 24000))
        await asyncio.sleep(0.3)
        assert open_streams(fake_server) == 1
        client.ws.transport.abort()  # no close frame: gone

    asyncio.run(run())
    still_serves(fake_server)


@pytest.fixture
def limits_server(fake_engine: None, tmp_path: Path) -> Iterator[LiveServer]:
    """Short limits: 4 s sessions, 1.5 s idle, 1 s backlog; one stream; a slow engine."""
    settings = fake_settings(
        tmp_path,
        streaming={"max_duration_s": 4, "idle_timeout_s": 1.5, "max_backlog_s": 1},
        plugins={"fault-counting": {"max_streams": 1}},
    )
    CountingEngine.delay = 0.3
    try:
        with LiveServer(settings) as live:
            yield live
    finally:
        CountingEngine.delay = 0.0


def test_audio_far_faster_than_real_time_drops_the_item(limits_server: LiveServer) -> None:
    async def run() -> None:
        client = await session(limits_server)
        await client.update(turn_detection=None)
        await client.append(to_pcm16(np.tile(TONE_SECOND, 3), 24000), chunk=2400)
        error = (await client.until("error"))[-1]["error"]
        assert error["code"] == "overloaded"
        await asyncio.sleep(0.5)
        assert open_streams(limits_server) == 0  # the dropped item's place is back
        # The rest of that buffer is ignored; a commit says there is nothing to commit,
        # and the next buffer is transcribed.
        await client.send({"type": "input_audio_buffer.commit"})
        assert (await client.until("error"))[-1]["error"][
            "code"
        ] == "input_audio_buffer_commit_empty"
        await client.send({"type": "input_audio_buffer.clear"})
        await client.until("input_audio_buffer.cleared")
        await client.append(to_pcm16(TONE_SECOND[:8000], 24000))
        await client.send({"type": "input_audio_buffer.commit"})
        assert (await client.until(COMPLETED))[-1]["transcript"] == "w1 end."
        await client.ws.close()

    asyncio.run(run())


def test_a_session_over_its_maximum_duration_is_closed(limits_server: LiveServer) -> None:
    async def run() -> None:
        client = await session(limits_server)
        await client.update(turn_detection=None)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            for _ in range(10):
                await client.append(to_pcm16(TONE_SECOND, 24000))
                await client.send({"type": "input_audio_buffer.commit"})
                await client.until(COMPLETED)
            await client.recv()
        errors = [e["error"] for e in client.events if e["type"] == "error"]
        assert errors[-1]["code"] == "audio_too_long"
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    asyncio.run(run())
    wait_no_streams(limits_server)


def test_an_idle_session_is_closed(limits_server: LiveServer) -> None:
    async def run() -> None:
        client = await session(limits_server)
        await client.update(turn_detection=None)
        await client.append(to_pcm16(TONE_SECOND[:4000], 24000))  # an item left open
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await client.recv(timeout=10)
        assert client.events[-1]["error"]["code"] == "request_timeout"
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    asyncio.run(run())
    wait_no_streams(limits_server)


def test_a_full_engine_refuses_new_sessions_before_the_upgrade(limits_server: LiveServer) -> None:
    async def run() -> None:
        client = await session(limits_server)
        await client.update(turn_detection=None)
        await client.append(to_pcm16(TONE_SECOND[:4000], 24000))
        await asyncio.sleep(0.5)
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(ws_url(limits_server))
        assert refused.value.response.status_code == 503
        assert json.loads(refused.value.response.body)["error"]["code"] == "overloaded"
        await client.ws.close()

    asyncio.run(run())


# -- auth, rate limit, graceful stop -------------------------------------------------


def test_keys_in_the_header_or_the_browser_subprotocol(fake_engine: None, tmp_path: Path) -> None:
    settings = fake_settings(
        tmp_path, api_keys=["s3cret"], rate_limit={"requests_per_minute": 60, "burst": 2}
    )

    async def run(live: LiveServer) -> None:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(ws_url(live))
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_api_key"
        with pytest.raises(websockets.InvalidStatus):
            await connect(ws_url(live), additional_headers={"Authorization": "Bearer wrong"})
        ok = await session(live, additional_headers={"Authorization": "Bearer s3cret"})
        assert ok.ws.response is not None and ok.ws.response.headers.get("x-request-id")
        await ok.ws.close()
        browser = await session(
            live,
            subprotocols=["realtime", "openai-insecure-api-key.s3cret"],  # type: ignore[list-item]
        )
        assert browser.ws.subprotocol == "realtime"
        await browser.ws.close()
        # Opening a session costs a token like a POST: the burst of 2 is spent.
        with pytest.raises(websockets.InvalidStatus) as limited:
            await connect(ws_url(live), additional_headers={"Authorization": "Bearer s3cret"})
        assert limited.value.response.status_code == 429

    with LiveServer(settings) as live:
        asyncio.run(run(live))


def test_draining_refuses_sessions_and_the_deadline_ends_open_ones(
    fake_engine: None, tmp_path: Path
) -> None:
    settings = fake_settings(tmp_path, shutdown_grace_s=1.0)

    async def run(live: LiveServer) -> None:
        client = await session(live)
        await client.update(turn_detection=None)
        await client.append(to_pcm16(TONE_SECOND, 24000))
        live.app.state.stop.request()
        await asyncio.sleep(0.1)
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(ws_url(live))
        assert refused.value.response.status_code == 503
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await client.recv(timeout=10)
        assert client.events[-1]["error"]["code"] == "shutting_down"
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012

    with LiveServer(settings) as live:
        asyncio.run(run(live))
        wait_no_streams(live)


# -- the official client -------------------------------------------------------------


def test_the_openai_client_transcribes_a_session(fake_server: LiveServer) -> None:
    from openai import AsyncOpenAI

    async def run() -> dict[str, Any]:
        client = AsyncOpenAI(
            api_key="unused",
            base_url=f"{fake_server.url}/v1",
            websocket_base_url=f"ws://127.0.0.1:{fake_server.port}/v1",
        )
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            first = await conn.recv()
            assert first.type == "session.created"
            await conn.session.update(
                session={
                    "type": "transcription",
                    "audio": {"input": {"turn_detection": None}},
                }
            )
            audio = to_pcm16(TONE_SECOND, 24000)
            await conn.input_audio_buffer.append(audio=b64(audio))
            await conn.input_audio_buffer.commit()
            async for event in conn:
                if event.type == COMPLETED:
                    return event.model_dump()
        raise AssertionError("no completed event")

    done = asyncio.run(run())
    assert done["transcript"] == "w1 w2 end." and done["usage"]["seconds"] == 1.0


# -- memory --------------------------------------------------------------------------


@pytest.mark.slow
def test_thirty_sessions_leave_no_stream_and_no_memory_behind(fake_server: LiveServer) -> None:
    async def sessions(n: int) -> None:
        for i in range(n):
            client = await session(fake_server)
            await client.update(turn_detection=None)
            if i % 3 == 0:
                await one_item(client)
                await client.ws.close()
            elif i % 3 == 1:
                await client.append(to_pcm16(TONE_SECOND[:8000], 24000))
                client.ws.transport.abort()  # gone mid-utterance
            else:
                await client.ws.send("{bad")
                await client.until("error")
                await client.ws.close()

    asyncio.run(sessions(6))  # warm-up: first-use allocations
    wait_no_streams(fake_server)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        asyncio.run(sessions(30))
        wait_no_streams(fake_server)
        time.sleep(0.5)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, f"grew by {grown} bytes over 30 sessions"
    metrics = httpx.get(f"{fake_server.url}/metrics").text
    assert "stts_realtime_sessions_open 0.0" in metrics


# -- Whisper, at real-time pace --------------------------------------------------------


@pytest.fixture(scope="module")
def whisper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # A long backlog: on a busy 2-core machine Whisper may fall behind for a while.
    settings = Settings(
        cache_dir=tmp_path_factory.mktemp("rt-whisper"),
        engines=["whisper"],
        streaming={"max_backlog_s": 120},
    )
    with LiveServer(settings) as live:
        yield live


@pytest.mark.slow
def test_jfk_at_real_time_pace_streams_deltas_within_the_offline_wer(
    whisper_server: LiveServer,
) -> None:
    path = corpus_file("openai-whisper__jfk.flac")
    reference = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
    offline = httpx.post(
        f"{whisper_server.url}/v1/audio/transcriptions",
        files={"file": (path.name, path.read_bytes())},
        data={"model": "whisper-1", "language": "en"},
        timeout=300,
    ).json()["text"]
    offline_wer = word_error_rate([reference], [offline])
    audio = to_pcm16(decode_audio(path.read_bytes()).samples, 24000)

    async def run() -> tuple[str, float]:
        client = await session(whisper_server)
        await client.update(
            transcription={"model": "whisper-1", "language": "en"},
            turn_detection={"type": "server_vad", "silence_duration_ms": 2000},
        )
        started = time.monotonic()
        sender = asyncio.ensure_future(client.append(audio + bytes(4800 * 25), pace=0.1))
        first = await client.until(DELTA, timeout=300)
        first_delta_s = time.monotonic() - started
        await sender
        await client.until(COMPLETED, timeout=300)
        await client.ws.close()
        done = [e for e in client.events if e["type"] == COMPLETED]
        assert len(done) == 1 and first
        deltas = [e["delta"] for e in client.events if e["type"] == DELTA]
        assert len(deltas) >= 2  # words came while the audio did
        assert done[0]["transcript"] == "".join(deltas)
        return done[0]["transcript"], first_delta_s

    streamed, first_delta_s = asyncio.run(run())
    streamed_wer = word_error_rate([reference], [streamed])
    print(
        f"jfk: first delta {first_delta_s:.2f} s after the first append; WER {streamed_wer:.3f} "
        f"streamed vs {offline_wer:.3f} offline ({normalize_text(streamed)!r})"
    )
    assert streamed_wer <= offline_wer + 0.10


def test_the_openai_beta_client_gets_the_beta_shape(fake_server: LiveServer) -> None:
    from openai import AsyncOpenAI

    async def run() -> tuple[list[str], dict[str, Any]]:
        client = AsyncOpenAI(
            api_key="unused",
            base_url=f"{fake_server.url}/v1",
            websocket_base_url=f"ws://127.0.0.1:{fake_server.port}/v1",
        )
        kinds: list[str] = []
        async with client.beta.realtime.connect(
            model="gpt-4o-transcribe", extra_query={"intent": "transcription"}
        ) as conn:
            await conn.transcription_session.update(
                session={"input_audio_format": "pcm16", "turn_detection": None}
            )
            await conn.input_audio_buffer.append(audio=b64(to_pcm16(TONE_SECOND, 24000)))
            await conn.input_audio_buffer.commit()
            async for event in conn:
                kinds.append(event.type)
                if event.type == COMPLETED:
                    return kinds, event.model_dump()
        raise AssertionError("no completed event")

    kinds, done = asyncio.run(run())
    assert kinds[0] == "transcription_session.created"
    assert "transcription_session.updated" in kinds and "conversation.item.created" in kinds
    assert done["transcript"] == "w1 w2 end."
