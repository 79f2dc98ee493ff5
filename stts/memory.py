"""Process memory: glibc's malloc, which decides whether freed memory leaves the process.

Two measured problems, two calls (both no-ops where libc is not glibc):

- :func:`limit_malloc_arenas`: glibc gives busy threads arenas of their own, up to 8 per
  core, and memory freed in one arena is not reused by another. With engine workers, the
  Whisper batcher and the decode threads, RSS crept up by ~40 MiB over 2500 batched
  requests, and stayed flat at 717 MiB with two arenas (bench/results/soak-batched*).
- :func:`release_free_memory`: memory freed back to malloc mostly stays in the process
  (glibc raises its mmap threshold once large blocks are freed, so a model's tensors end
  up on the heap). Unloading an idle model gave back 13 % of Whisper's RSS and, after
  the first cycle, none of PocketSphinx's, and the unloaded RSS crept up 69 / 49 MiB over
  10 load/unload cycles; with ``malloc_trim`` after the unload: 65 % and 100 % given
  back, 2.2 / 0.06 MiB over 10 cycles (bench/unload.py).
"""

from __future__ import annotations

import ctypes
import os
import sys
from functools import cache
from typing import Any

_M_ARENA_MAX = -8  # from <malloc.h>


@cache
def _glibc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and others
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas for threads created from now on (``mallopt(M_ARENA_MAX)``).

    Call it before worker threads exist. ``MALLOC_ARENA_MAX`` in the environment wins.
    Returns whether the cap was applied (not glibc, or 0: no).
    """
    libc = _glibc()
    if arenas <= 0 or "MALLOC_ARENA_MAX" in os.environ or libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Hand memory that malloc holds but nobody uses back to the OS (``malloc_trim(0)``).

    Walks every arena, so it costs milliseconds: for rare events such as unloading a
    model, never per request. Returns whether any memory was released.
    """
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
