"""What to install for a missing feature: the one place that knows the distribution's name."""

from __future__ import annotations

DISTRIBUTION = "stts-server"
"""The name on PyPI ("stts" there is an unrelated project); the import name stays ``stts``."""


def install_hint(extra: str) -> str:
    """The pip command that adds ``extra``, for the published package and a source checkout."""
    return f"pip install '{DISTRIBUTION}[{extra}]' (source checkout: pip install -e '.[{extra}]')"
