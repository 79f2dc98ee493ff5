"""Decoding loops in a token sequence: one n-gram said again and again in a row.

Whisper loops on noise, on cut-off audio and on short contexts ("you you you …", a
phrase over and over). The whole-pass checks share :func:`repeat_start` — the short-
context decoder over a pass's words (:func:`stts.engines.whisper_short.loop_start`),
gap repair over a segment's text (:func:`stts.engines.whisper_gaps.loops`) — each with
its own tokens and thresholds. A live stream's committed words are filtered as they come
by :class:`stts.engines.streaming.RepetitionGuard` instead, which has to decide word by
word without seeing what follows.
"""

from __future__ import annotations

from collections.abc import Sequence


def repeat_start(tokens: Sequence[str], times: int, shortest: int, longest: int) -> int | None:
    """Where a loop begins: the index of the second copy of the first n-gram
    (``shortest`` <= n <= ``longest``) that comes ``times`` times in a row, or None."""
    for start in range(len(tokens)):
        for n in range(shortest, longest + 1):
            if start + n * times > len(tokens):
                break
            gram = list(tokens[start : start + n])
            if all(
                list(tokens[start + k * n : start + (k + 1) * n]) == gram for k in range(1, times)
            ):
                return start + n
    return None
