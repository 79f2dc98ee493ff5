"""Memory growth across a repeated piece of work, for the leak tests (soak, Wyoming, fuzz).

Measured around the work itself, not as the process's peak: other tests' models dominate
``ru_maxrss`` and would hide a leak of any size that matters.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from stts.memory import release_free_memory


@dataclass(frozen=True)
class Growth:
    """What the measured rounds left behind."""

    heap_bytes: int
    """Python heap still referenced, summed over files with more than one new object (a
    single new object is the last request's buffer held by its exception, not a leak)."""
    rss_bytes: int
    """Resident memory, after a collection and glibc giving free pages back."""
    top: str
    """The largest heap differences by file, for the failure message."""


def _rss() -> int:
    gc.collect()
    release_free_memory()
    return int(psutil.Process().memory_info().rss)


def growth_across(
    run: Callable[[int], None],
    *,
    warm: int,
    measured: int,
    settle: Callable[[], None] = gc.collect,
    frames: int = 5,
    trace: bool = True,
) -> Growth:
    """``run(warm)`` twice (caches, lazy imports, label sets; the second time traced, so
    what the first snapshot holds is the steady state), then ``run(measured)``; compare.
    ``trace=False``: resident memory only, without tracemalloc's 3-5x slowdown."""
    run(warm)
    if not trace:
        run(warm)
        settle()
        before = _rss()
        run(measured)
        settle()
        return Growth(0, _rss() - before, "")
    tracemalloc.start(frames)
    try:
        run(warm)
        settle()
        first = tracemalloc.take_snapshot()
        rss_before = _rss()
        run(measured)
        settle()
        second = tracemalloc.take_snapshot()
        rss_after = _rss()
    finally:
        tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = second.filter_traces(ignore).compare_to(first.filter_traces(ignore), "filename")
    heap = sum(stat.size_diff for stat in diff if stat.count_diff > 1)
    return Growth(heap, rss_after - rss_before, "\n".join(str(s) for s in diff[:8]))
