"""PocketSphinx: a small, fast, English-only engine whose model ships inside its wheel.

The decoder is stateful (one utterance at a time), so it is not thread-safe: the
service gives every worker its own instance.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from stts.errors import EngineUnavailable
from stts.transcript import Transcript, Word, segments_from_words

if TYPE_CHECKING:
    from stts.audio import AudioArray
    from stts.config import Settings

_FILLER = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\+\+.*\+\+)$")
_ALTERNATE = re.compile(r"\(\d+\)$")
_PAUSE_S = 0.6  # a silence this long starts a new segment
_WINDOW_SAMPLES = 16_000 * 30


class PocketSphinxEngine(Engine):
    """CMU PocketSphinx 5 with its bundled US-English acoustic and language models."""

    name = "pocketsphinx"
    extra = "pocketsphinx"

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        super().__init__(settings, model)
        self._decoder: Any = None
        self._frame_rate = 100

    @classmethod
    def default_model(cls, settings: Settings) -> str:
        """``en-us`` (bundled) or the name of the configured model directory."""
        model_dir = settings.pocketsphinx.model_dir
        return model_dir.name if model_dir is not None else "en-us"

    @classmethod
    def probe(cls, settings: Settings) -> Availability:
        """Installed? (the bundled model comes with the package)."""
        model = cls.default_model(settings)
        if importlib.util.find_spec("pocketsphinx") is None:
            return Availability(False, False, "pip install 'stts[pocketsphinx]'", model, (model,))
        model_dir = settings.pocketsphinx.model_dir
        if model_dir is not None and not (model_dir / "mdef").is_file():
            return Availability(
                True, False, "pocketsphinx.model_dir has no acoustic model (mdef)", model, (model,)
            )
        return Availability(True, True, "", model, (model,))

    @property
    def capabilities(self) -> Capabilities:
        """English only, word timings, no translation, not thread-safe."""
        return Capabilities(
            languages=frozenset({"en"}),
            word_timestamps=True,
            translation=False,
            language_detection=False,
            streaming=False,
            thread_safe=False,
        )

    def load(self) -> None:
        """Create this instance's decoder (about 0.3 s)."""
        if importlib.util.find_spec("pocketsphinx") is None:
            raise EngineUnavailable(
                "the pocketsphinx engine is not installed: pip install 'stts[pocketsphinx]'"
            )
        from pocketsphinx import Decoder  # heavy: imported once, at load

        kwargs: dict[str, Any] = {"samprate": 16000, "loglevel": "FATAL"}
        model_dir: Path | None = self.settings.pocketsphinx.model_dir
        if model_dir is not None:
            kwargs["hmm"] = str(model_dir)
        try:
            self._decoder = Decoder(**kwargs)
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineUnavailable("the PocketSphinx model failed to load") from exc
        self._frame_rate = int(self._decoder.config["frate"])

    def transcribe(
        self,
        audio: AudioArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        """Decode the audio as one utterance, then split it at pauses into segments."""
        if self._decoder is None:
            raise EngineUnavailable("the PocketSphinx model is not loaded")
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
        words: list[Word] = []
        # Whole-utterance decoding (full_utt) normalises cepstra over the utterance, which is
        # much more accurate than live mode; long audio is cut into windows so cancel works.
        for start in range(0, max(len(pcm), 1), _WINDOW_SAMPLES):
            if cancel is not None and cancel.cancelled:
                raise Cancelled("the request was cancelled")
            words += self._decode_window(pcm[start : start + _WINDOW_SAMPLES], start / 16_000)
        segments = segments_from_words(words, _PAUSE_S)
        if on_segment is not None:
            for seg in segments:
                on_segment(seg)
        return Transcript(
            text=" ".join(s.text for s in segments),
            segments=tuple(segments),
            duration=round(len(audio) / 16_000, 3),
            language="en",
            model=self.model,
            task="transcribe",
        )

    def _decode_window(self, pcm: np.ndarray[Any, Any], offset: float) -> list[Word]:
        decoder = self._decoder
        # The feature front end keeps state from the previous utterance (found by the
        # Wyoming test: the same audio twice on one decoder gave two transcripts). Reset it,
        # so an answer never depends on what this worker heard before (0.1 ms).
        decoder.reinit_feat()
        decoder.start_utt()
        try:
            decoder.process_raw(pcm.tobytes(), False, True)
        finally:
            decoder.end_utt()
        if decoder.hyp() is None:
            return []
        words = []
        for seg in decoder.seg():
            if _FILLER.match(seg.word):
                continue
            words.append(
                Word(
                    start=round(offset + seg.start_frame / self._frame_rate, 3),
                    end=round(offset + (seg.end_frame + 1) / self._frame_rate, 3),
                    word=_ALTERNATE.sub("", seg.word),
                    probability=round(float(seg.prob), 4),
                )
            )
        return words

    def close(self) -> None:
        """Drop the decoder."""
        self._decoder = None
