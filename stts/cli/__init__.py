"""Command line: ``stts transcribe``, ``stts engines``, ``stts serve``, ``stts jobs``.

One module a concern: :mod:`.common` (the typer app, shared options, error and exit
handling), :mod:`.files` (transcribe, detect-language), :mod:`.engine_table` (engines),
:mod:`.batch_files` (batch), :mod:`.server` (serve) and :mod:`.jobs`. The commands are
registered here, in the order ``stts --help`` lists them.
"""

from __future__ import annotations

import sys

from stts.cli.batch_files import batch
from stts.cli.common import PlainHelpCommand, app
from stts.cli.engine_table import engines
from stts.cli.files import detect_language, transcribe
from stts.cli.jobs import jobs_app
from stts.cli.server import serve

__all__ = ["app", "main"]

app.command(cls=PlainHelpCommand)(transcribe)
app.command("detect-language", cls=PlainHelpCommand)(detect_language)
app.command(cls=PlainHelpCommand)(engines)
app.command(cls=PlainHelpCommand)(batch)
app.command(cls=PlainHelpCommand)(serve)
app.add_typer(jobs_app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
