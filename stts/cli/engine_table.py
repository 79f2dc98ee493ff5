"""``stts engines``: every engine, whether it can run here, and what it can do."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stts.cli.common import ConfigOpt, exit_on_error, load_settings, out


def engines(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    config: ConfigOpt = None,
) -> None:
    """List every engine: installed, model found, loaded, capabilities, reason if unavailable."""
    from stts.engines.registry import engine_names
    from stts.service import EngineManager, engine_report

    with exit_on_error():
        settings = load_settings(config)
        manager = EngineManager(settings)
        reports = [engine_report(manager, name) for name in engine_names()]
    if as_json:
        out.print_json(json.dumps(reports))
        return
    table = Table(title="stts engines")
    for col in ("name", "enabled", "installed", "model", "loaded", "capabilities", "note"):
        table.add_column(col, no_wrap=col != "note")

    def yes(value: bool) -> str:
        return "[green]yes[/green]" if value else "[red]no[/red]"

    for r in reports:
        caps = r["capabilities"]
        labels = {
            "word_timestamps": "words",
            "translation": "translate",
            "language_detection": "detect",
            "streaming": "stream",
        }
        flags = [label for key, label in labels.items() if caps.get(key)]
        codes = caps["languages"]
        if isinstance(codes, str):
            langs = codes
        elif len(codes) > 6:  # Whisper's 99: the count, not a wall of codes
            langs = f"{len(codes)} ({', '.join(codes[:3])}, ...)"
        else:
            langs = ",".join(codes)
        model = r["model"] + ("" if r["model_found"] else " [red](missing)[/red]")
        name = r["name"] + (" [bold](default)[/bold]" if r["default"] else "")
        table.add_row(
            name,
            yes(r["enabled"]),
            yes(r["installed"]),
            model,
            yes(r["loaded"]),
            f"{langs}; {', '.join(flags) or '-'}",
            escape(r["reason"] or ""),
        )
    # Piped output is not cut at 80 columns: a table is useless with its notes cut off.
    (out if out.is_terminal else Console(width=160)).print(table)
