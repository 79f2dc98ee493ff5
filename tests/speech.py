"""Synthetic speech in other languages, from espeak-ng (Debian package ``espeak-ng``).

The corpus is English only: a translation that does nothing, or a detector that always
says "en", would pass on it. espeak-ng's voices are robotic but Whisper base understands
them; the command line is fixed (no user input), the WAV comes back on stdout.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

from stts.audio import DecodedAudio, decode_audio

ESPEAK = shutil.which("espeak-ng")

SENTENCES = {
    "fr": "Bonjour à tous. Aujourd'hui il fait très beau, et nous allons au marché pour "
    "acheter du pain et du fromage.",
    "de": "Guten Morgen. Heute ist das Wetter sehr schön, und wir gehen in die Stadt, um "
    "Brot und Käse zu kaufen.",
    "es": "Buenos días a todos. Hoy hace muy buen tiempo, y vamos al mercado para comprar "
    "pan y queso.",
}


def requires_espeak() -> None:
    """Skip without espeak-ng, except in CI, where .ci/run installs it: there, fail."""
    if ESPEAK is None:
        if os.environ.get("CI") == "true":
            pytest.fail("espeak-ng is missing in CI (.ci/run installs it)")
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")


@functools.cache
def _wav(text: str, voice: str) -> bytes:
    assert ESPEAK is not None
    return subprocess.run(
        [ESPEAK, "-v", voice, "-s", "140", "--stdout", text],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout


def spoken(text: str, voice: str = "en-us") -> DecodedAudio:
    """``text`` read by espeak-ng's ``voice``, decoded to 16 kHz mono."""
    requires_espeak()
    return decode_audio(_wav(text, voice))
