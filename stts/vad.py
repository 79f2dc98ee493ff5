"""Voice activity detection for live streams: Silero VAD v6, frame by frame with its state.

The model is the one faster-whisper already ships (``faster_whisper/assets/
silero_vad_v6.onnx``), run on ONNX Runtime one 32 ms frame (512 samples at 16 kHz) at a
time, carrying its recurrent state and 64 samples of context from frame to frame, as
the model expects. :class:`VadStream` turns frame probabilities into speech start and
stop events with the OpenAI ``server_vad`` knobs: ``threshold``, ``prefix_padding_ms``
(audio kept from before the start) and ``silence_duration_ms`` (silence that ends
speech).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stts.audio import SAMPLE_RATE, AudioArray
from stts.errors import EngineUnavailable
from stts.install import install_hint

FRAME = 512
"""Samples per VAD frame (32 ms at 16 kHz)."""
_CONTEXT = 64


def silero_model_path() -> Path | None:
    """Where faster-whisper keeps the Silero VAD model, if it is installed."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"
    return path if path.is_file() else None


class SileroVad:
    """The ONNX session, loaded once per process and shared (``run`` is thread-safe)."""

    _instance: SileroVad | None = None
    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(
            str(path), providers=["CPUExecutionProvider"], sess_options=opts
        )

    @classmethod
    def shared(cls) -> SileroVad:
        """The process's VAD model (EngineUnavailable when faster-whisper is missing)."""
        with cls._lock:
            if cls._instance is None:
                path = silero_model_path()
                if path is None or importlib.util.find_spec("onnxruntime") is None:
                    raise EngineUnavailable(
                        "server VAD needs the Silero model shipped with faster-whisper: "
                        + install_hint("whisper")
                    )
                cls._instance = cls(path)
            return cls._instance

    def probabilities(self, frames: AudioArray, state: dict[str, Any]) -> AudioArray:
        """Speech probability of each 512-sample frame, in order, updating ``state``."""
        out = np.empty(len(frames) // FRAME, np.float32)
        for i in range(len(out)):
            frame = frames[i * FRAME : (i + 1) * FRAME]
            batch = np.concatenate([state["context"], frame])[None, :].astype(np.float32)
            prob, state["h"], state["c"] = self.session.run(
                None, {"input": batch, "h": state["h"], "c": state["c"]}
            )
            state["context"] = frame[-_CONTEXT:]
            out[i] = float(np.asarray(prob).reshape(-1)[0])
        return out


def new_state() -> dict[str, Any]:
    """The recurrent state of one stream, before its first frame."""
    return {
        "h": np.zeros((1, 1, 128), np.float32),
        "c": np.zeros((1, 1, 128), np.float32),
        "context": np.zeros(_CONTEXT, np.float32),
    }


@dataclass(frozen=True, slots=True)
class VadEvent:
    """Speech started or stopped at ``sample`` (stream position, 16 kHz)."""

    kind: str  # "start" | "stop"
    sample: int


class VadStream:
    """Speech start/stop events for one stream (server_vad semantics)."""

    def __init__(
        self,
        model: SileroVad,
        *,
        threshold: float = 0.5,
        silence_duration_ms: int = 500,
        min_speech_ms: int = 100,
    ) -> None:
        self.model = model
        self.threshold = threshold
        # Hysteresis as in Silero's own get_speech_timestamps: speech ends below a
        # lower threshold, so a word's quiet tail does not end it.
        self.off_threshold = max(0.01, threshold - 0.15)
        self.silence_frames = max(1, silence_duration_ms * SAMPLE_RATE // 1000 // FRAME)
        self.min_speech_frames = max(1, min_speech_ms * SAMPLE_RATE // 1000 // FRAME)
        self.state = new_state()
        self.carry = np.zeros(0, np.float32)
        self.frames = 0  # frames seen
        self.speaking = False
        self._run = 0  # frames of speech (before start) or of silence (during speech)
        self._start_frame = 0

    def accept(self, samples: AudioArray) -> list[VadEvent]:
        """Feed audio; the events its frames caused, in order."""
        data = np.concatenate([self.carry, samples]) if self.carry.size else samples
        usable = len(data) // FRAME * FRAME
        self.carry = data[usable:].copy()
        events: list[VadEvent] = []
        for prob in self.model.probabilities(data[:usable], self.state):
            if not self.speaking:
                if prob >= self.threshold:
                    if self._run == 0:
                        self._start_frame = self.frames
                    self._run += 1
                    if self._run >= self.min_speech_frames:
                        self.speaking, self._run = True, 0
                        events.append(VadEvent("start", self._start_frame * FRAME))
                else:
                    self._run = 0
            elif prob < self.off_threshold:
                self._run += 1
                if self._run >= self.silence_frames:
                    stop = (self.frames - self._run + 1) * FRAME
                    self.speaking, self._run = False, 0
                    events.append(VadEvent("stop", stop))
            else:
                self._run = 0
            self.frames += 1
        return events


def has_speech(samples: AudioArray, threshold: float = 0.5, min_speech_ms: int = 250) -> bool:
    """Whether Silero VAD finds any speech in a whole recording (faster-whisper's own
    ``get_speech_timestamps``, the pass its ``vad_filter`` makes). True, so the engine
    decides, when faster-whisper (which ships the model) is not installed."""
    if silero_model_path() is None or importlib.util.find_spec("onnxruntime") is None:
        return True
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(threshold=threshold, min_speech_duration_ms=min_speech_ms)
    return bool(get_speech_timestamps(samples, options, sampling_rate=SAMPLE_RATE))
