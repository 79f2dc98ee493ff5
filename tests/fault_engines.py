"""FAULT-INJECTION engines, registered only by tests: never shipped, never a default.

They are deterministic stand-ins used to make an engine fail, hang or load badly on
purpose, the way httpx's MockTransport stands in for a network.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from stts.engines.base import (
    Availability,
    Cancelled,
    CancelToken,
    Capabilities,
    Engine,
    SegmentCallback,
    TranscribeOptions,
)
from stts.engines.whisper_stream import WhisperStream
from stts.errors import EngineUnavailable
from stts.transcript import Segment, Transcript

if TYPE_CHECKING:
    from stts.audio import AudioArray
    from stts.config import Settings


# Audio for the fakes: a quiet 440 Hz tone, one second at 16 kHz. Not silence: stts
# answers digital silence with "" without running an engine at all.
TONE_SECOND = (0.1 * np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000)).astype(np.float32)
TONE_SECOND_PCM16 = (TONE_SECOND * 32767).astype("<i2").tobytes()


class FaultEngine(Engine):
    """Base for the fakes: available, English, thread-safe."""

    extra = ""

    @classmethod
    def probe(cls, settings: Settings) -> Availability:
        return Availability(True, True, "", "fake", ("fake",))

    @classmethod
    def default_model(cls, settings: Settings) -> str:
        return "fake"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(languages=frozenset({"en"}), thread_safe=True)

    def load(self) -> None:
        pass


class AlwaysFailsEngine(FaultEngine):
    """Raises on every transcription (a crashing engine)."""

    name = "fault-fails"
    calls: ClassVar[int] = 0

    def transcribe(
        self,
        audio: AudioArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        type(self).calls += 1
        raise RuntimeError("injected engine failure")


class LoadFailsEngine(FaultEngine):
    """Its model never loads; counts the attempts."""

    name = "fault-load-fails"
    loads: ClassVar[int] = 0

    def load(self) -> None:
        type(self).loads += 1
        raise EngineUnavailable("injected load failure")

    def transcribe(self, audio, options, *, on_segment=None, cancel=None):  # type: ignore[no-untyped-def]
        raise AssertionError("never called: load failed")


class SlowEngine(FaultEngine):
    """Takes ``delay`` seconds per call in small steps, honouring cancel; records activity."""

    name = "fault-slow"
    delay: ClassVar[float] = 1.0
    active: ClassVar[int] = 0
    peak: ClassVar[int] = 0
    finished: ClassVar[int] = 0
    cancelled: ClassVar[int] = 0
    _lock = threading.Lock()

    def transcribe(
        self,
        audio: AudioArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        cls = type(self)
        with cls._lock:
            cls.active += 1
            cls.peak = max(cls.peak, cls.active)
        try:
            end = time.monotonic() + cls.delay
            while time.monotonic() < end:
                if cancel is not None and cancel.cancelled:
                    with cls._lock:
                        cls.cancelled += 1
                    raise Cancelled("cancelled")
                time.sleep(0.01)
            seg = Segment(0, 0.0, len(audio) / 16000, "slow result")
            if on_segment is not None:
                on_segment(seg)
            with cls._lock:
                cls.finished += 1
            return Transcript("slow result", (seg,), len(audio) / 16000, "en", model="fake")
        finally:
            with cls._lock:
                cls.active -= 1


class SlowLoadEngine(SlowEngine):
    """A SlowEngine whose model takes ``load_delay`` seconds to load (a big model, a cold
    disk)."""

    name = "fault-slow-load"
    load_delay: ClassVar[float] = 1.0

    def load(self) -> None:
        time.sleep(type(self).load_delay)


class FailsMidStreamEngine(FaultEngine):
    """Hands out one segment, then raises (an engine that breaks part-way)."""

    name = "fault-fails-mid-stream"

    def transcribe(
        self,
        audio: AudioArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        if on_segment is not None:
            on_segment(Segment(0, 0.0, 0.5, "partial words"))
        raise RuntimeError("injected failure after the first segment")


def undecoded_whisper_stream(*, min_chunk_s: float, early_passes: bool) -> WhisperStream:
    """A Whisper stream with no model, on the short-context cadence: the caller fakes its
    ``_decode`` (FAULT-INJECTION of each pass's words)."""
    stream = WhisperStream(
        None,
        TranscribeOptions(language="en"),
        model_name="m",
        multilingual=False,
        beam_size=1,
        min_chunk_s=min_chunk_s,
        short_context=False,
        early_passes=early_passes,
    )
    stream._short = object()  # type: ignore[assignment]  # the cadence; no decoder runs
    return stream
