"""What every ``stts`` command shares: the typer app, plain help, shared options, the
consoles, settings loading, and the one way an error becomes a line and an exit status."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from stts import __version__
from stts.errors import EngineUnavailable, SttsError
from stts.formats import ResponseFormat

if TYPE_CHECKING:
    from stts.config import Settings
    from stts.service import EngineManager


def _plain_flags(params: list[Any]) -> None:
    """Flags (``--help``, ``--json``...) take no value: no ``<bool>`` after them in help."""
    for param in params:
        if getattr(param, "is_bool_flag", False) and param.metavar is None:
            param.metavar = ""


class _PlainFlags:
    """Help with flags that take no value shown without a ``<bool>`` after them."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_flags(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        _plain_flags([option])
        return option


class PlainHelpCommand(_PlainFlags, TyperCommand):
    """typer's command with help that reads as usual: ``FILE...``, not ``{files}...``, in
    the usage line, and flags without a ``<bool>`` value. Give it to every command."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [p.replace("{", "").replace("}", "") for p in super().collect_usage_pieces(ctx)]


class PlainHelpGroup(_PlainFlags, TyperGroup):
    """The top level with the same plain flags (``stts --help``, ``--version``)."""


app = typer.Typer(
    name="stts",
    help="Self-hosted, offline speech-to-text: transcribe files, list engines, serve HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=PlainHelpGroup,
)
out = Console()
err = Console(stderr=True)

RAW_SUFFIXES = {".raw", ".pcm"}


class TaskChoice(str, Enum):
    """--task values."""

    transcribe_ = "transcribe"
    translate_ = "translate"


def choice(enum: type[Enum]) -> Any:
    """A parser turning an option's text into ``enum``, with a plain message when it isn't
    one (typer's own says "Value error, 'xml' is not one of ...")."""
    values = [str(member.value) for member in enum]

    def parse(value: str) -> Any:
        if value not in values:
            raise typer.BadParameter(f"{value!r} is not one of: {', '.join(values)}")
        return enum(value)

    return parse


# Options several commands take, with the same names and help everywhere.
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (or STTS_CONFIG)")
]
EngineOpt = Annotated[str | None, typer.Option("--engine", "-e", help="engine name")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="model of the engine")]
LanguageOpt = Annotated[
    str | None, typer.Option("--language", "-l", help="e.g. en; default: detect")
]
TaskOpt = Annotated[
    TaskChoice,
    typer.Option(
        "--task",
        help="transcribe, or translate to English",
        metavar="transcribe|translate",
        parser=choice(TaskChoice),
    ),
]


def format_option(help: str) -> Any:
    """``--format``/``-f``: one of the response formats, said plainly when it isn't."""
    return typer.Option(
        "--format",
        "-f",
        help=help,
        metavar="|".join(f.value for f in ResponseFormat),
        parser=choice(ResponseFormat),
    )


WordTimestampsOpt = Annotated[bool, typer.Option("--word-timestamps", help="word-level times")]
RawRateOpt = Annotated[int, typer.Option(help="sample rate of .raw/.pcm files")]
RawChannelsOpt = Annotated[int, typer.Option(help="channels of .raw/.pcm files")]
RawEncodingOpt = Annotated[str, typer.Option(help="s16le, s32le, f32le or u8 for .raw/.pcm")]


def _show_version(value: bool) -> None:
    if value:
        out.print(f"stts {__version__}", highlight=False, markup=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="print the version and exit", callback=_show_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Self-hosted, offline speech-to-text: transcribe files, list engines, serve HTTP."""


def check_file(path: Path) -> None:
    """OSError naming no path twice (the CLI prints ``error: PATH: reason``)."""
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file")


def error(message: str) -> None:
    """One line on stderr, never wrapped, never a traceback."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def reason(exc: SttsError | OSError) -> str:
    """What went wrong, in the words ``error`` prints after the file's name."""
    if isinstance(exc, SttsError):
        return exc.message
    return str(exc.strerror or exc)


@contextmanager
def exit_on_error(code: int = 2) -> Iterator[None]:
    """An SttsError inside becomes one line on stderr and exit ``code`` (2: a usage or
    set-up error, said before any work), never a traceback."""
    try:
        yield
    except SttsError as exc:
        error(exc.message)
        raise typer.Exit(code) from None


def print_text(text: str) -> None:
    """A rendered transcript on stdout as it is: no markup, no wrapping, one final newline."""
    out.print(
        text,
        end="" if text.endswith("\n") else "\n",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def load_settings(config: Path | None, **overrides: object) -> Settings:
    """Settings, with pydantic's validation report turned into one readable ConfigError."""
    from pydantic import ValidationError

    from stts.config import Settings
    from stts.errors import ConfigError

    try:
        return Settings.load(config, **overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None


def file_command_manager(
    config: Path | None, engine: str | None, model: str | None, *, detect: bool = False
) -> tuple[Settings, EngineManager]:
    """Settings and a manager for a command that works through files, the named engine
    enabled and checked (with ``detect``: the engine that identifies languages)."""
    from stts.service import EngineManager

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings(config)
    if engine and engine not in settings.engines:
        settings.engines.append(engine)
    manager = EngineManager(settings)
    key = manager.resolve(engine or (manager.language_detector() if detect else None), model)
    # An engine that can't run is a set-up problem, said once before any file is read.
    availability = manager.probe(key[0])
    if not availability.available:
        raise EngineUnavailable(f"engine {key[0]!r} cannot run here: {availability.reason}")
    return settings, manager
