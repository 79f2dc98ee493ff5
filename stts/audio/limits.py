"""Checks every decode runs: the input's size, the audio's duration, the caller's cancel."""

from __future__ import annotations

import os
from pathlib import Path

from stts.audio.base import AudioLimits, AudioSource, CancelCheck
from stts.errors import AudioTooLarge, AudioTooLong, Cancelled, UnsupportedAudio


def check_cancel(cancel: CancelCheck | None) -> None:
    """Cancelled once the caller gave up."""
    if cancel is not None and cancel():
        raise Cancelled("decoding was stopped")


def read_bounded(source: AudioSource, max_bytes: int) -> bytes | memoryview:
    """The input's bytes; a bytes object, bytearray or memoryview is not copied."""
    data: bytes | memoryview
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, bytearray | memoryview):
        data = memoryview(source).cast("B")
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise UnsupportedAudio(f"no such file: {path.name}") from exc
        if size > max_bytes:
            raise AudioTooLarge(f"the audio is {size} bytes; the limit is {max_bytes} bytes")
        if path.is_dir():
            raise UnsupportedAudio(f"{path.name} is a directory, not an audio file")
        data = path.read_bytes()
    else:
        # Read one byte past the limit so an oversized stream is refused without reading it all.
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise AudioTooLarge(f"the audio is larger than the limit of {max_bytes} bytes")
    return data


def check_duration(seconds: float, limits: AudioLimits, *, declared: bool) -> None:
    """AudioTooLong past the limit (``declared``: the header says so, nothing decoded)."""
    if seconds > limits.max_duration_s:
        what = "its header declares" if declared else "it is"
        raise AudioTooLong(
            f"the audio is too long: {what} {seconds:.1f} s; "
            f"the limit is {limits.max_duration_s:.0f} s"
        )
