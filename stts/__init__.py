"""stts: self-hosted, offline speech-to-text.

Library use::

    from stts import transcribe
    print(transcribe("speech.mp3").text)
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from stts.audio import AudioLimits, DecodedAudio, RawFormat, decode_audio
from stts.errors import AudioError, EngineError, SttsError
from stts.transcript import Segment, Transcript, Word

if TYPE_CHECKING:
    import numpy.typing as npt

    from stts.audio import AudioSource
    from stts.config import Settings
    from stts.engines.base import Task
    from stts.service import EngineManager, LanguageGuess

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "AudioLimits",
    "DecodedAudio",
    "EngineError",
    "RawFormat",
    "Segment",
    "SttsError",
    "Transcript",
    "Word",
    "__version__",
    "decode_audio",
    "default_manager",
    "detect_language",
    "transcribe",
]

_manager: EngineManager | None = None
_manager_lock = threading.Lock()


def default_manager(settings: Settings | None = None) -> EngineManager:
    """The process-wide EngineManager used by :func:`transcribe` (models load once)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            from stts.config import Settings
            from stts.service import EngineManager

            _manager = EngineManager(settings or Settings.load())
        return _manager


def transcribe(
    source: AudioSource | DecodedAudio | npt.NDArray[Any],
    *,
    engine: str | None = None,
    model: str | None = None,
    language: str | None = None,
    task: Task = "transcribe",
    word_timestamps: bool = False,
    initial_prompt: str | None = None,
    raw: RawFormat | None = None,
    sample_rate: int = 16_000,
    manager: EngineManager | None = None,
) -> Transcript:
    """Transcribe a file path, bytes, file object or NumPy array (samples at
    ``sample_rate``, 16 kHz mono float32 as Whisper takes them) with the default engine."""
    from stts.engines.base import TranscribeOptions

    mgr = manager or default_manager()
    options = mgr.check_options(  # a bad language is refused before any decoding
        mgr.resolve(engine, model),
        TranscribeOptions(
            language=language,
            task=task,
            word_timestamps=word_timestamps,
            initial_prompt=initial_prompt,
        ),
    )
    audio = (
        source
        if isinstance(source, DecodedAudio)
        else decode_audio(
            source, raw=raw, limits=mgr.settings.audio.limits(), sample_rate=sample_rate
        )
    )
    return mgr.transcribe(audio, engine=engine, model=model, options=options)


def detect_language(
    source: AudioSource | DecodedAudio | npt.NDArray[Any],
    *,
    engine: str | None = None,
    model: str | None = None,
    top: int = 5,
    raw: RawFormat | None = None,
    sample_rate: int = 16_000,
    manager: EngineManager | None = None,
) -> LanguageGuess:
    """Which language is spoken (Whisper, multilingual models): ``.language``,
    ``.probability`` and the ``top`` most likely in ``.ranked``."""
    mgr = manager or default_manager()
    audio = (
        source
        if isinstance(source, DecodedAudio)
        else decode_audio(
            source, raw=raw, limits=mgr.settings.audio.limits(), sample_rate=sample_rate
        )
    )
    return mgr.detect_language(audio, engine=engine, model=model, top=top)


os.environ.setdefault("HF_HUB_OFFLINE", "1")  # stts never fetches models from a hub
