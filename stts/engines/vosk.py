"""Vosk (Kaldi): offline recognition from a model directory the operator provides.

Set ``STTS_VOSK__MODEL_PATH`` (or ``[vosk] model_path`` in the TOML file) to an unpacked
model from https://alphacephei.com/vosk/models. The Kaldi model is shared and
thread-safe; each request gets its own recogniser, which is cheap.

Kaldi dithers its features with random noise, so by default the same audio can come
back with different words from one request to the next (alphacep/vosk-api#868). Unless
``vosk.dither`` is set, stts loads the model through a view of the directory in its
cache (links to every file, the feature config with ``--dither=0.0`` added), which makes
transcripts repeatable without touching the operator's model directory.

Vosk streams natively (:class:`VoskStream`): a recogniser per stream over the shared
model, fed as audio arrives. When Kaldi's endpointer closes an utterance
(``AcceptWaveform`` returns True) that utterance's words are final and committed;
``PartialResult`` is the tentative rest; ``FinalResult`` commits the last utterance.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
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
    model_dir_name,
    model_language,
    probe_model_dir,
)
from stts.engines.streaming import EngineStream, StreamUpdate
from stts.errors import EngineUnavailable
from stts.transcript import Segment, Transcript, Word, segments_from_words

if TYPE_CHECKING:
    from stts.audio import AudioArray
    from stts.config import Settings

_CHUNK_SAMPLES = 16_000 // 2  # feed half a second at a time; cancel is checked per chunk
_FEATURE_CONFIGS = ("mfcc.conf", "fbank.conf")
_PAUSE_S = 0.6  # in a stream's transcript, a silence this long starts a new segment


def undithered_view(model_dir: Path, cache_dir: Path) -> Path:
    """A directory of links to ``model_dir`` whose feature config turns dithering off.

    Returns ``model_dir`` itself when it has no feature config to change.
    """
    model_dir = model_dir.resolve()
    conf = model_dir / "conf"
    if not any((conf / name).is_file() for name in _FEATURE_CONFIGS):
        return model_dir
    digest = hashlib.sha256(str(model_dir).encode()).hexdigest()[:16]
    target = cache_dir / "models" / f"vosk-{model_dir.name}-{digest}"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".vosk-view.", dir=target.parent))
    try:
        for entry in model_dir.iterdir():
            if entry.name != "conf":
                (staging / entry.name).symlink_to(entry)
        (staging / "conf").mkdir()
        for entry in conf.iterdir():
            if entry.name in _FEATURE_CONFIGS:
                text = entry.read_text(encoding="utf-8")
                (staging / "conf" / entry.name).write_text(
                    text.rstrip("\n") + "\n--dither=0.0\n", encoding="utf-8"
                )
            else:
                (staging / "conf" / entry.name).symlink_to(entry)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


class VoskEngine(Engine):
    """Vosk/Kaldi with a model directory from config."""

    name = "vosk"
    extra = "vosk"

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        super().__init__(settings, model)
        self._model: Any = None
        self._recognizer_cls: Any = None

    @classmethod
    def default_model(cls, settings: Settings) -> str:
        """The model directory's name."""
        return model_dir_name(settings.vosk.model_path)

    @classmethod
    def probe(cls, settings: Settings) -> Availability:
        """Installed? model directory configured and present?"""
        model = cls.default_model(settings)
        missing = probe_model_dir(
            "vosk", "vosk", "STTS_VOSK__MODEL_PATH", "Vosk model", settings.vosk.model_path, model
        )
        if missing is not None:
            return missing
        return Availability(True, True, "", model, (model,))

    @property
    def capabilities(self) -> Capabilities:
        """One language per model, word timings, native streaming, no translation;
        recognisers per request or stream."""
        return Capabilities(
            languages=model_language(self.settings.vosk.language),
            word_timestamps=True,
            translation=False,
            language_detection=False,
            streaming=True,
            thread_safe=True,
        )

    def load(self) -> None:
        """Load the Kaldi model from the configured directory."""
        availability = self.probe(self.settings)
        if not availability.available:
            raise EngineUnavailable(f"vosk: {availability.reason}")
        import vosk  # heavy: imported once, at load

        vosk.SetLogLevel(-1)
        path = self.settings.vosk.model_path
        assert path is not None  # probe checked it
        try:
            if not self.settings.vosk.dither:
                path = undithered_view(path, self.settings.cache_dir)
            self._model = vosk.Model(str(path))
        except Exception as exc:
            raise EngineUnavailable("the Vosk model failed to load") from exc
        self._recognizer_cls = vosk.KaldiRecognizer

    def transcribe(
        self,
        audio: AudioArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        """Feed PCM to a fresh recogniser; every Kaldi utterance becomes a segment."""
        if self._model is None:
            raise EngineUnavailable("the Vosk model is not loaded")
        recognizer = self._recognizer_cls(self._model, 16_000)
        recognizer.SetWords(True)
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
        segments: list[Segment] = []

        def collect(result_json: str) -> None:
            result = json.loads(result_json)
            words = tuple(
                Word(
                    round(w["start"], 3),
                    round(w["end"], 3),
                    w["word"],
                    round(w.get("conf", 1.0), 4),
                )
                for w in result.get("result", ())
            )
            text = result.get("text", "").strip()
            if text and words:
                seg = Segment(len(segments), words[0].start, words[-1].end, text, words)
                segments.append(seg)
                if on_segment is not None:
                    on_segment(seg)

        for start in range(0, len(pcm), _CHUNK_SAMPLES):
            if cancel is not None and cancel.cancelled:
                raise Cancelled("the request was cancelled")
            if recognizer.AcceptWaveform(pcm[start : start + _CHUNK_SAMPLES].tobytes()):
                collect(recognizer.Result())
        collect(recognizer.FinalResult())
        return Transcript(
            text=" ".join(s.text for s in segments),
            segments=tuple(segments),
            duration=round(len(audio) / 16_000, 3),
            language=self.settings.vosk.language,
            model=self.model,
        )

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        """A live utterance: a recogniser of its own over the shared model."""
        if self._model is None:
            raise EngineUnavailable("the Vosk model is not loaded")
        recognizer = self._recognizer_cls(self._model, 16_000)
        recognizer.SetWords(True)
        return VoskStream(recognizer, self.settings.vosk.language, self.model)

    def close(self) -> None:
        """Drop the model."""
        self._model = None


def _result_words(result_json: str) -> list[Word]:
    """A Kaldi result's timed words, each with a leading space (streams join them)."""
    result = json.loads(result_json)
    return [
        Word(
            round(w["start"], 3), round(w["end"], 3), " " + w["word"], round(w.get("conf", 1.0), 4)
        )
        for w in result.get("result", ())
    ]


class VoskStream(EngineStream):
    """One live utterance on a Kaldi recogniser; Kaldi's endpointer decides what is final."""

    def __init__(self, recognizer: Any, language: str | None, model_name: str) -> None:
        self._recognizer = recognizer
        self.language = language
        self.model_name = model_name
        self.committed: list[Word] = []
        self.total = 0  # samples accepted
        self.finished = False

    def _commit(self, result_json: str) -> StreamUpdate:
        words = _result_words(result_json)
        if words and not self.committed:  # the stream's first word: no leading space
            first = words[0]
            words[0] = Word(first.start, first.end, first.word.lstrip(), first.probability)
        self.committed += words
        return StreamUpdate(tuple(words), "")

    def accept(self, samples: AudioArray) -> StreamUpdate:
        """Feed the audio; an utterance Kaldi closed is committed, the rest is tentative."""
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
        self.total += len(pcm)
        if self._recognizer.AcceptWaveform(pcm.tobytes()):
            return self._commit(self._recognizer.Result())
        partial = json.loads(self._recognizer.PartialResult()).get("partial", "")
        return StreamUpdate((), partial.strip())

    def finish(self) -> StreamUpdate:
        """Commit the last utterance (``FinalResult``)."""
        if self.finished:
            return StreamUpdate()
        self.finished = True
        return self._commit(self._recognizer.FinalResult())

    def transcript(self) -> Transcript:
        """Everything committed so far, a segment per pause."""
        segments = segments_from_words(
            [Word(w.start, w.end, w.word.strip(), w.probability) for w in self.committed],
            _PAUSE_S,
        )
        return Transcript(
            text="".join(w.word for w in self.committed).strip(),
            segments=tuple(segments),
            duration=round(self.total / 16_000, 3),
            language=self.language,
            model=self.model_name,
        )

    def close(self) -> None:
        """Drop the recogniser."""
        self._recognizer = None
