"""Audio shipped inside the package, so a fresh install has something to transcribe.

``jfk.flac``: the 11 s excerpt of J.F. Kennedy's inaugural address (1961) that
openai-whisper and faster-whisper test with, re-encoded as 16 kHz mono FLAC (204 KB).
A work of the US government: public domain (see ``README.md`` beside it).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
"""What is said in :func:`sample_path`'s clip."""


def sample_path() -> Path:
    """Path of the bundled sample clip (``stts transcribe --sample`` reads it)."""
    return Path(str(files(__name__).joinpath("jfk.flac")))
