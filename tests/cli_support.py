"""The ``stts`` console script run as a real subprocess, for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def run_stts(
    *args: str,
    cache_dir: Path,
    cwd: Path | None = None,
    env: Mapping[str, str | None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m stts.cli ARGS`` with its own model cache, offline; ``env`` sets
    variables on top of this process's (None removes one)."""
    environ = {**os.environ, "STTS_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    for name, value in (env or {}).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    # The arguments are test constants: no shell, no user input.
    return subprocess.run(
        [sys.executable, "-m", "stts.cli", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=300,
        check=False,
    )
