"""Wav2Vec2 / CTC on ONNX Runtime: no PyTorch at run time.

Point ``STTS_WAV2VEC2__MODEL_PATH`` at a model directory in Hugging Face layout that
holds an ONNX export of a CTC model (``model.onnx``, or ``onnx/model.onnx``) beside its
``vocab.json``, ``config.json`` and ``preprocessor_config.json``. Such a directory is
what ``optimum-cli export onnx --model facebook/wav2vec2-base-960h DIR`` writes, and
HuBERT, WavLM and Data2Vec-audio CTC models export the same way.

Decoding is greedy CTC: arg-max per 20 ms frame, repeats collapsed, blanks dropped,
the word delimiter token (``|``) splitting words. Word times come from the frames, and a
word's probability is the mean of its characters' frame probabilities. Audio longer
than ``window_s`` is cut into windows at the quietest moment near each window's end, so
attention memory stays bounded and a cancelled request stops between windows. One ONNX
Runtime session is shared by every worker (``InferenceSession.run`` is thread-safe).
"""

from __future__ import annotations

import json
import math
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
from stts.errors import EngineUnavailable
from stts.transcript import Transcript, Word, segments_from_words

if TYPE_CHECKING:
    from stts.audio import AudioArray
    from stts.config import Settings

SAMPLE_RATE = 16_000
ONNX_CANDIDATES = (
    "model.onnx",
    "onnx/model.onnx",
    "model_quantized.onnx",
    "onnx/model_quantized.onnx",
)
_PAUSE_S = 0.6  # a silence this long between words starts a new segment
_CUT_SEARCH_S = 3.0  # look this far back from a window's end for the quietest place to cut


def find_onnx(model_dir: Path) -> Path | None:
    """The ONNX file of a model directory, or None."""
    for name in ONNX_CANDIDATES:
        if (model_dir / name).is_file():
            return model_dir / name
    return None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


class Wav2Vec2Engine(Engine):
    """A CTC acoustic model (Wav2Vec2, HuBERT, WavLM, ...) exported to ONNX."""

    name = "wav2vec2"
    extra = "wav2vec2"

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        super().__init__(settings, model)
        self._session: Any = None
        self._input_name = "input_values"
        self._needs_mask = False
        self._tokens: dict[int, str] = {}
        self._blank = 0
        self._delimiter = "|"
        self._skip: frozenset[int] = frozenset()
        self._normalize = True
        self._stride = 320  # input samples per output frame (product of the conv strides)

    @classmethod
    def default_model(cls, settings: Settings) -> str:
        """The model directory's name."""
        return model_dir_name(settings.wav2vec2.model_path)

    @classmethod
    def probe(cls, settings: Settings) -> Availability:
        """Installed? model directory with an ONNX file and a vocabulary?"""
        model = cls.default_model(settings)
        path = settings.wav2vec2.model_path
        missing = probe_model_dir(
            "onnxruntime", "wav2vec2", "STTS_WAV2VEC2__MODEL_PATH", "CTC model", path, model
        )
        if missing is not None:
            return missing
        assert path is not None
        if find_onnx(path) is None:
            return Availability(
                True,
                False,
                f"no ONNX model in {path} (expected model.onnx; export one with "
                "optimum-cli export onnx)",
                model,
                (),
            )
        if not (path / "vocab.json").is_file():
            return Availability(True, False, f"no vocab.json in {path}", model, ())
        return Availability(True, True, "", model, (model,))

    @property
    def capabilities(self) -> Capabilities:
        """The model's one language, word timings from CTC frames, no translation.

        Not streaming: Wav2Vec2 attends over its whole input, so a chunk's letters change
        as context arrives on either side. Chunked CTC with overlap would re-run the
        model on every chunk plus its overlap (about twice the CPU on the 2-core target)
        and commit letters across chunk edges that whole decoding spells differently;
        live clients are better served by PocketSphinx, Vosk or Whisper, which stream.
        """
        return Capabilities(
            languages=model_language(self.settings.wav2vec2.language),
            word_timestamps=True,
            word_probabilities=True,
            translation=False,
            language_detection=False,
            streaming=False,
            thread_safe=True,
        )

    def load(self) -> None:
        """Open the ONNX session and read the vocabulary and preprocessing settings."""
        availability = self.probe(self.settings)
        if not availability.available:
            raise EngineUnavailable(f"wav2vec2: {availability.reason}")
        import onnxruntime  # heavy: imported once, at load

        settings = self.settings.wav2vec2
        model_dir = settings.model_path
        assert model_dir is not None  # probe checked it
        onnx_path = find_onnx(model_dir)
        assert onnx_path is not None
        try:
            vocab = _read_json(model_dir / "vocab.json")
            config = _read_json(model_dir / "config.json")
            tokenizer = _read_json(model_dir / "tokenizer_config.json")
            preprocessor = _read_json(model_dir / "preprocessor_config.json") or _read_json(
                model_dir / "processor_config.json"
            ).get("feature_extractor", {})
        except (OSError, ValueError) as exc:
            raise EngineUnavailable(f"wav2vec2: unreadable model files in {model_dir}") from exc
        if len(vocab) == 1 and isinstance(next(iter(vocab.values())), dict):
            vocab = next(iter(vocab.values()))  # multilingual vocab.json: {lang: {token: id}}
        if not vocab or not all(isinstance(v, int) for v in vocab.values()):
            raise EngineUnavailable(f"wav2vec2: vocab.json in {model_dir} is not token -> id")

        self._tokens = {int(i): str(t) for t, i in vocab.items()}
        pad = tokenizer.get("pad_token", "<pad>")
        pad = pad.get("content", "<pad>") if isinstance(pad, dict) else pad
        self._blank = int(config.get("pad_token_id", vocab.get(pad, 0)))
        self._delimiter = str(tokenizer.get("word_delimiter_token", "|"))
        # <s>, </s>, <unk> and the like never reach the text
        self._skip = frozenset(
            i
            for i, t in self._tokens.items()
            if t.startswith("<") and t.endswith(">") and i != self._blank
        )
        self._normalize = bool(preprocessor.get("do_normalize", True))
        strides = config.get("conv_stride")
        if isinstance(strides, list) and strides:
            self._stride = math.prod(int(s) for s in strides)

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        try:
            self._session = onnxruntime.InferenceSession(
                str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise EngineUnavailable(f"wav2vec2: the ONNX model failed to load: {exc}") from exc
        names = [i.name for i in self._session.get_inputs()]
        self._input_name = names[0]
        # exports of models trained with attention masks (large-lv60, XLS-R) take one too
        self._needs_mask = "attention_mask" in names

    def transcribe(
        self,
        audio: AudioArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        """Run the CTC model window by window and decode greedily."""
        if self._session is None:
            raise EngineUnavailable("the wav2vec2 model is not loaded")
        words: list[Word] = []
        for start, end in self._windows(audio):
            if cancel is not None and cancel.cancelled:
                raise Cancelled("the request was cancelled")
            words += self._decode_window(audio[start:end], start / SAMPLE_RATE)
        segments = segments_from_words(words, _PAUSE_S)
        if on_segment is not None:
            for seg in segments:
                on_segment(seg)
        return Transcript(
            text=" ".join(s.text for s in segments),
            segments=tuple(segments),
            duration=round(len(audio) / SAMPLE_RATE, 3),
            language=self.settings.wav2vec2.language,
            model=self.model,
            task="transcribe",
        )

    def logits(self, audio: AudioArray) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The model's CTC logits (frames x vocabulary) for one window of audio."""
        x = audio.astype(np.float32, copy=False)
        if self._normalize:  # as Wav2Vec2FeatureExtractor: zero mean, unit variance
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        feeds = {self._input_name: x[np.newaxis, :]}
        if self._needs_mask:
            feeds["attention_mask"] = np.ones((1, len(x)), dtype=np.int64)
        out = self._session.run(None, feeds)[0]
        return np.asarray(out[0], dtype=np.float32)

    def _windows(self, audio: AudioArray) -> list[tuple[int, int]]:
        """Cut points: each window ends at the quietest 20 ms near its nominal end."""
        window = int(self.settings.wav2vec2.window_s * SAMPLE_RATE)
        search = int(_CUT_SEARCH_S * SAMPLE_RATE)
        hop = 320
        cuts: list[tuple[int, int]] = []
        start = 0
        while len(audio) - start > window:
            lo = start + window - search
            frames = audio[lo : start + window]
            usable = len(frames) // hop * hop
            energy = np.square(frames[:usable].reshape(-1, hop)).sum(axis=1)
            end = lo + int(np.argmin(energy)) * hop + hop // 2
            cuts.append((start, end))
            start = end
        if len(audio) - start >= 400 or not cuts:  # shorter than one conv receptive field
            cuts.append((start, len(audio)))
        return cuts

    def _decode_window(self, audio: AudioArray, offset: float) -> list[Word]:
        if len(audio) < 400:
            return []
        logits = self.logits(audio)
        ids = logits.argmax(axis=1)
        top = logits.max(axis=1)
        shifted = np.exp(logits - top[:, np.newaxis])
        probs = 1.0 / shifted.sum(axis=1)  # softmax probability of the arg-max token
        seconds_per_frame = self._stride / SAMPLE_RATE

        words: list[Word] = []
        chars: list[str] = []
        char_probs: list[float] = []
        first = last = 0

        def flush() -> None:
            if chars:
                words.append(
                    Word(
                        start=round(offset + first * seconds_per_frame, 3),
                        end=round(offset + (last + 1) * seconds_per_frame, 3),
                        word="".join(chars),
                        probability=round(float(np.mean(char_probs)), 4),
                    )
                )
                chars.clear()
                char_probs.clear()

        previous = -1
        in_char = False  # is the current run of frames a character of the word being built?
        for t, token_id in enumerate(ids.tolist()):
            if token_id == previous:
                if in_char:
                    last = t  # a repeated frame stretches the character
                continue
            previous = token_id
            in_char = False
            if token_id == self._blank or token_id in self._skip:
                continue  # <s>, <unk> and the like separate repeats but print nothing
            token = self._tokens.get(token_id, "")
            if token == self._delimiter:
                flush()
                continue
            if not chars:
                first = t
            chars.append(token)
            char_probs.append(float(probs[t]))
            last = t
            in_char = True
        flush()
        return words

    def close(self) -> None:
        """Drop the session."""
        self._session = None
