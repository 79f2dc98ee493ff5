"""A cheap look at an upload before it is queued: is it audio, and how long does it say it is.

Only the container header is read (no decoding), so a one-hour file is checked in
milliseconds; the full decode happens when the job runs, with the same limits.
"""

from __future__ import annotations

from pathlib import Path

import av
import av.error

from stts.audio import RawFormat
from stts.errors import AudioTooLong, EmptyAudio, UnsupportedAudio

_RAW_BYTES = {"s16le": 2, "s32le": 4, "f32le": 4, "u8": 1}


def declared_seconds(path: Path, raw: RawFormat | None, max_duration_s: float) -> float | None:
    """The length the file declares (None when it declares none); UnsupportedAudio if it
    is not audio stts reads, AudioTooLong (413) over ``max_duration_s``."""
    size = path.stat().st_size
    if size == 0:
        raise EmptyAudio("the audio is empty (0 bytes)")
    if raw is not None:
        seconds: float | None = size / (_RAW_BYTES[raw.encoding] * raw.channels) / raw.sample_rate
    else:
        try:
            with av.open(str(path), mode="r", metadata_errors="ignore") as container:
                if not container.streams.audio:
                    raise UnsupportedAudio("the file contains no audio stream")
                stream = container.streams.audio[0]
                if stream.duration is not None and stream.time_base is not None:
                    seconds = float(stream.duration * stream.time_base)
                elif container.duration is not None:
                    seconds = container.duration / 1_000_000
                else:
                    seconds = None
        except av.error.FFmpegError as exc:
            raise UnsupportedAudio(
                "the file is not in an audio format stts can read "
                "(supported: wav, flac, mp3, ogg/vorbis, opus, m4a/aac, webm, raw PCM)"
            ) from exc
    if seconds is not None and seconds > max_duration_s:
        raise AudioTooLong(
            f"the audio is {seconds:.0f} s long; the limit for jobs is {max_duration_s:.0f} s"
        )
    return seconds
