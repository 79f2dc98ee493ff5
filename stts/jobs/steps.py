"""How a long recording is cut into job steps, and how the steps' transcripts are joined.

A step is at most ``jobs.step_s`` of audio, cut at the quietest 30 ms of its last few
seconds, so words are rarely split. The plan depends only on the samples, so a job
resumed after a crash cuts exactly where the first attempt did: the steps done before
the crash are kept, the rest are transcribed as an uninterrupted run would have, and
the joined text is the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stts.audio import SAMPLE_RATE, AudioArray
from stts.jobs.codec import shifted
from stts.transcript import Segment, Transcript

_FRAME = int(0.03 * SAMPLE_RATE)
_SEARCH_S = 5.0


@dataclass(frozen=True, slots=True)
class Step:
    """One piece of a job's audio, in samples."""

    index: int
    start: int
    end: int

    @property
    def start_s(self) -> float:
        """Where it starts, in seconds."""
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        """Where it ends, in seconds."""
        return self.end / SAMPLE_RATE


def plan_steps(samples: AudioArray, step_s: float) -> list[Step]:
    """Cut the audio into steps of at most ``step_s``, each ending at a quiet moment."""
    total = len(samples)
    longest = int(step_s * SAMPLE_RATE)
    search = min(int(_SEARCH_S * SAMPLE_RATE), longest // 3)
    steps: list[Step] = []
    start = 0
    while start < total:
        if total - start <= longest:
            end = total
        else:
            end = start + _quietest(samples, start, longest, search)
        steps.append(Step(len(steps), start, end))
        start = end
    return steps


def _quietest(samples: AudioArray, start: int, longest: int, search: int) -> int:
    """Offset from ``start`` of the middle of the quietest frame in the last ``search``."""
    lo = start + longest - search
    window = samples[lo : start + longest]
    frames = len(window) // _FRAME
    if frames == 0:
        return longest
    energy = np.square(window[: frames * _FRAME].astype(np.float64)).reshape(frames, _FRAME)
    quietest = int(np.argmin(energy.sum(axis=1)))
    return lo - start + quietest * _FRAME + _FRAME // 2


def join_steps(
    parts: list[tuple[Step, Transcript]], duration_s: float, language: str | None, task: str
) -> Transcript:
    """One transcript from the steps' transcripts, in order, times made absolute."""
    segments: list[Segment] = []
    texts: list[str] = []
    detected = language
    for step, part in parts:
        segments.extend(shifted(part, step.start_s, len(segments)))
        if part.text.strip():
            texts.append(part.text.strip())
        detected = detected or part.language
    # One step: its text as the engine wrote it, exactly what a synchronous request gets.
    text = parts[0][1].text if len(parts) == 1 else " ".join(texts)
    last = parts[-1][1] if parts else None
    return Transcript(
        text=text,
        segments=tuple(segments),
        duration=round(duration_s, 3),
        language=detected,
        engine=last.engine if last else "",
        model=last.model if last else "",
        task=task,
        attempts=(last.engine,) if last else (),
    )
