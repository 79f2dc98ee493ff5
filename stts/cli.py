"""Command line: ``stts transcribe``, ``stts engines``, ``stts serve``, ``stts jobs``."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from stts import __version__
from stts.audio import RawFormat, decode_audio
from stts.errors import EngineUnavailable, SttsError
from stts.formats import FILE_SUFFIXES, ResponseFormat, render
from stts.samples import sample_path

if TYPE_CHECKING:
    from stts.config import Settings
    from stts.service import EngineManager


def _plain_flags(params: list[Any]) -> None:
    """Flags (``--help``, ``--json``...) take no value: no ``<bool>`` after them in help."""
    for param in params:
        if getattr(param, "is_bool_flag", False) and param.metavar is None:
            param.metavar = ""


class PlainHelpCommand(TyperCommand):
    """typer's command with help that reads as usual: ``FILE...``, not ``{files}...``, in
    the usage line, and flags without a ``<bool>`` value. Give it to every command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_flags(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        _plain_flags([option])
        return option

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [p.replace("{", "").replace("}", "") for p in super().collect_usage_pieces(ctx)]


class PlainHelpGroup(TyperGroup):
    """The top level with the same plain flags (``stts --help``, ``--version``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_flags(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        _plain_flags([option])
        return option


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


def _choice(enum: type[Enum]) -> Any:
    """A parser turning an option's text into ``enum``, with a plain message when it isn't
    one (typer's own says "Value error, 'xml' is not one of ...")."""
    values = [str(member.value) for member in enum]

    def parse(value: str) -> Any:
        if value not in values:
            raise typer.BadParameter(f"{value!r} is not one of: {', '.join(values)}")
        return enum(value)

    return parse


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (or STTS_CONFIG)")
]


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


def _check_file(path: Path) -> None:
    """OSError naming no path twice (the CLI prints ``error: PATH: reason``)."""
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file")


def _error(message: str) -> None:
    """One line on stderr, never wrapped, never a traceback."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def _load_settings(config: Path | None, **overrides: object) -> Settings:
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


def _file_command_manager(
    config: Path | None, engine: str | None, model: str | None, *, detect: bool = False
) -> tuple[Settings, EngineManager]:
    """Settings and a manager for a command that works through files, the named engine
    enabled and checked (with ``detect``: the engine that identifies languages)."""
    from stts.service import EngineManager

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = _load_settings(config)
    if engine and engine not in settings.engines:
        settings.engines.append(engine)
    manager = EngineManager(settings)
    key = manager.resolve(engine or (manager.language_detector() if detect else None), model)
    # An engine that can't run is a set-up problem, said once before any file is read.
    availability = manager.probe(key[0])
    if not availability.available:
        raise EngineUnavailable(f"engine {key[0]!r} cannot run here: {availability.reason}")
    return settings, manager


@app.command(cls=PlainHelpCommand)
def transcribe(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="FILE", help="audio files (wav, flac, mp3, ogg, opus, m4a, webm, raw)"
        ),
    ] = None,
    sample: Annotated[
        bool,
        typer.Option(
            "--sample", help="transcribe the bundled 11 s sample (JFK, 1961; public domain)"
        ),
    ] = False,
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="engine name")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="model of the engine")] = None,
    language: Annotated[
        str | None, typer.Option("--language", "-l", help="e.g. en; default: detect")
    ] = None,
    task: Annotated[
        TaskChoice,
        typer.Option(
            "--task",
            help="transcribe, or translate to English",
            metavar="transcribe|translate",
            parser=_choice(TaskChoice),
        ),
    ] = TaskChoice.transcribe_,
    fmt: Annotated[
        ResponseFormat,
        typer.Option(
            "--format",
            "-f",
            help="output format",
            metavar="|".join(f.value for f in ResponseFormat),
            parser=_choice(ResponseFormat),
        ),
    ] = ResponseFormat.text,
    word_timestamps: Annotated[
        bool, typer.Option("--word-timestamps", help="word-level times")
    ] = False,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="write one file per input here")
    ] = None,
    raw_rate: Annotated[int, typer.Option(help="sample rate of .raw/.pcm files")] = 16000,
    raw_channels: Annotated[int, typer.Option(help="channels of .raw/.pcm files")] = 1,
    raw_encoding: Annotated[
        str, typer.Option(help="s16le, s32le, f32le or u8 for .raw/.pcm")
    ] = "s16le",
    config: ConfigOpt = None,
) -> None:
    """Transcribe audio files; with -o, write one output file per input."""
    from stts.engines.base import TranscribeOptions

    files = [*(files or []), *([sample_path()] if sample else [])]
    if not files:
        _error("no audio given: name one or more files, or --sample")
        raise typer.Exit(2)
    try:
        settings, manager = _file_command_manager(config, engine, model)
        raw = RawFormat(raw_rate, raw_channels, raw_encoding)  # type: ignore[arg-type]
        # A language the engine doesn't know is a usage error, said before any decoding.
        options = manager.check_options(
            manager.resolve(engine, model),
            TranscribeOptions(language=language, task=task.value, word_timestamps=word_timestamps),
        )
    except SttsError as exc:
        _error(f"{exc.message}")
        raise typer.Exit(2) from None
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with manager.session(), progress:
        overall = progress.add_task("files", total=len(files))
        for path in files:
            try:
                _check_file(path)
                audio = decode_audio(
                    path,
                    raw=raw if path.suffix.lower() in RAW_SUFFIXES else None,
                    limits=settings.audio.limits(),
                )
                bar = progress.add_task(path.name, total=max(audio.duration, 0.01))
                result = manager.transcribe(
                    audio,
                    engine=engine,
                    model=model,
                    options=options,
                    on_segment=lambda seg, bar=bar: progress.update(bar, completed=seg.end),  # type: ignore[misc]
                )
                progress.remove_task(bar)
                text = render(result, fmt)
                if output_dir is None:
                    if len(files) > 1:
                        err.rule(str(path), style="dim")
                    out.print(
                        text,
                        end="" if text.endswith("\n") else "\n",
                        highlight=False,
                        markup=False,
                        soft_wrap=True,
                    )
                else:
                    target = output_dir / (path.stem + FILE_SUFFIXES[fmt])
                    target.write_text(text, encoding="utf-8")
                    err.print(f"[green]wrote[/green] {target}", highlight=False)
            except SttsError as exc:
                failures += 1
                _error(f"{path}: {exc.message}")
            except OSError as exc:
                failures += 1
                _error(f"{path}: {exc.strerror or exc}")
            progress.advance(overall)
    if failures:
        raise typer.Exit(1)


@app.command("detect-language", cls=PlainHelpCommand)
def detect_language(
    files: Annotated[list[Path], typer.Argument(metavar="FILE", help="audio files")],
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="engine name")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="model of the engine")] = None,
    top: Annotated[int, typer.Option(help="how many languages to list per file", min=1)] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    config: ConfigOpt = None,
) -> None:
    """Say which language each file is spoken in (Whisper, multilingual models)."""
    try:
        settings, manager = _file_command_manager(config, engine, model, detect=True)
    except SttsError as exc:
        _error(f"{exc.message}")
        raise typer.Exit(2) from None
    failures = 0
    with manager.session():
        for path in files:
            try:
                _check_file(path)
                audio = decode_audio(path, limits=settings.audio.limits())
                guess = manager.detect_language(audio, engine=engine, model=model, top=top)
            except SttsError as exc:
                failures += 1
                _error(f"{path}: {exc.message}")
                continue
            except OSError as exc:
                failures += 1
                _error(f"{path}: {exc.strerror or exc}")
                continue
            if as_json:  # JSON Lines: one compact object per file
                line = json.dumps({"file": str(path), **guess.as_dict()}, ensure_ascii=False)
                out.print(line, highlight=False, markup=False, soft_wrap=True)
            else:
                ranked = ", ".join(f"{lang} {p:.2f}" for lang, p in guess.ranked)
                out.print(f"{path}: {guess.language}  ({ranked})", highlight=False, markup=False)
    if failures:
        raise typer.Exit(1)


@app.command(cls=PlainHelpCommand)
def engines(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    config: ConfigOpt = None,
) -> None:
    """List every engine: installed, model found, loaded, capabilities, reason if unavailable."""
    from stts.engines.registry import engine_names
    from stts.service import EngineManager, engine_report

    try:
        settings = _load_settings(config)
        manager = EngineManager(settings)
        reports = [engine_report(manager, name) for name in engine_names()]
    except SttsError as exc:
        _error(f"{exc.message}")
        raise typer.Exit(2) from None
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


@app.command(cls=PlainHelpCommand)
def batch(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(metavar="INPUT", help="audio files, directories (recursive) or globs"),
    ] = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="outputs and results.jsonl go here")
    ] = Path("stts-batch"),
    manifests: Annotated[
        list[Path] | None,
        typer.Option(
            "--manifest", help="file listing inputs: one path a line, or CSV/JSONL with 'path'"
        ),
    ] = None,
    formats: Annotated[
        str, typer.Option("--format", "-f", help="comma-separated: txt, srt, vtt, json")
    ] = "txt",
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="engine name")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="model of the engine")] = None,
    language: Annotated[
        str | None, typer.Option("--language", "-l", help="e.g. en; default: detect")
    ] = None,
    task: Annotated[
        TaskChoice,
        typer.Option(
            "--task",
            help="transcribe, or translate to English",
            metavar="transcribe|translate",
            parser=_choice(TaskChoice),
        ),
    ] = TaskChoice.transcribe_,
    word_timestamps: Annotated[
        bool, typer.Option("--word-timestamps", help="word-level times")
    ] = False,
    raw_rate: Annotated[int, typer.Option(help="sample rate of .raw/.pcm files")] = 16000,
    raw_channels: Annotated[int, typer.Option(help="channels of .raw/.pcm files")] = 1,
    raw_encoding: Annotated[
        str, typer.Option(help="s16le, s32le, f32le or u8 for .raw/.pcm")
    ] = "s16le",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="run on a Ray cluster through Ray Data: host:port, 'auto' (RAY_ADDRESS or "
            "the local cluster) or 'local' (start one in this process); needs stts-server[ray]",
        ),
    ] = None,
    actors: Annotated[int, typer.Option(help="with --ray: engine actors", min=1)] = 1,
    cpus_per_actor: Annotated[
        float, typer.Option(help="with --ray: CPUs each actor reserves", min=0.01)
    ] = 1.0,
    gpus_per_actor: Annotated[
        float,
        typer.Option(help="with --ray: GPUs each actor reserves (an actor per GPU: 1)", min=0),
    ] = 0.0,
    config: ConfigOpt = None,
) -> None:
    """Transcribe many files into an output directory, resumably (results.jsonl)."""
    from stts import batch as batching
    from stts.errors import InvalidRequest

    try:
        paths = batching.collect_inputs(inputs or [], manifests or [])
        if not paths:
            raise InvalidRequest("no input given: name files, directories or a manifest")
        request = batching.BatchRequest(
            engine=engine,
            model=model,
            language=language,
            task=task.value,
            word_timestamps=word_timestamps,
            formats=batching.parse_formats(formats) or (ResponseFormat.text,),
            raw=RawFormat(raw_rate, raw_channels, raw_encoding),  # type: ignore[arg-type]
        )
        settings, manager = _file_command_manager(config, engine, model)
        key = manager.resolve(engine, model)
        manager.check_options(key, request.options())  # a bad language, before any work
    except SttsError as exc:
        _error(f"{exc.message}")
        raise typer.Exit(2) from None
    try:
        job = batching.Batch(output_dir, request, request.key(*key))
    except OSError as exc:
        _error(f"{output_dir}: {exc.strerror or exc}")
        raise typer.Exit(2) from None
    with job:
        items = job.plan(paths)
        if job.summary.skipped:
            err.print(f"skipping {job.summary.skipped} input(s) already done", highlight=False)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files, {task.fields[hours]:.2f} h audio"),
            TimeRemainingColumn(),
            console=err,
            disable=not err.is_terminal,
        )
        with manager.session(), progress:
            bar = progress.add_task("transcribing", total=len(items), hours=0.0)

            def done(record: dict[str, Any]) -> None:
                if record["error"]:
                    _error(f"{record['path']}: {record['error']}")
                progress.update(bar, advance=1, hours=job.summary.audio_seconds / 3600)

            try:
                if ray_address is None:
                    batching.run_local(job, items, manager, settings, on_record=done)
                else:
                    from stts.raycluster.batch import run_on_ray

                    manager.close()  # the actors load the engine; the driver needs none
                    run_on_ray(
                        ray_address,
                        job,
                        items,
                        settings,
                        actors,
                        cpus_per_actor,
                        on_record=done,
                        gpus_per_actor=gpus_per_actor,
                    )
            except SttsError as exc:
                _error(exc.message)
                raise typer.Exit(2) from None
            except OSError as exc:  # the output directory: full, read-only...
                _error(f"{output_dir}: {exc.strerror or exc}")
                raise typer.Exit(1) from None
    summary = job.summary
    err.print(
        f"{summary.done} done, {summary.skipped} skipped, {summary.failed} failed; "
        f"{summary.audio_seconds / 3600:.2f} h of audio; results in {job.results_path}",
        highlight=False,
        soft_wrap=True,
    )
    if summary.failed:
        raise typer.Exit(1)


@app.command(cls=PlainHelpCommand)
def serve(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    engines_opt: Annotated[
        str | None, typer.Option("--engines", help="comma-separated engines to offer")
    ] = None,
    default_engine: Annotated[
        str | None, typer.Option(help="engine used when a request names none")
    ] = None,
    wyoming: Annotated[
        str | None,
        typer.Option(
            "--wyoming",
            help="also serve the Wyoming protocol (Home Assistant) at tcp://host:port "
            "or unix:///path",
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="run as a Ray Serve deployment on this cluster (host:port, 'auto' or "
            "'local'); needs stts-server[ray]",
        ),
    ] = None,
    replicas: Annotated[
        int, typer.Option(help="with --ray: replicas (initial ones when autoscaling)", min=1)
    ] = 1,
    min_replicas: Annotated[
        int | None, typer.Option(help="with --ray and --max-replicas: autoscaling floor", min=0)
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option(help="with --ray: autoscale up to this many replicas", min=1)
    ] = None,
    target_ongoing_requests: Annotated[
        float | None,
        typer.Option(help="with --ray --max-replicas: requests per replica to scale at", min=0.1),
    ] = None,
    cpus_per_replica: Annotated[
        float, typer.Option(help="with --ray: CPUs each replica reserves", min=0.01)
    ] = 1.0,
    config: ConfigOpt = None,
) -> None:
    """Run the HTTP server (OpenAI-compatible /v1 and the legacy /api routes)."""
    if ray_address is not None:
        _serve_on_ray(
            ray_address,
            config,
            {"host": host, "port": port, "engines": engines_opt, "default_engine": default_engine},
            (replicas, min_replicas, max_replicas, target_ongoing_requests, cpus_per_replica),
        )
        return

    from stts.api.app import create_app, server_config
    from stts.memory import limit_malloc_arenas

    try:
        settings = _load_settings(
            config,
            host=host,
            port=port,
            engines=engines_opt,
            default_engine=default_engine,
            wyoming_uri=wyoming,
        )
        limit_malloc_arenas(settings.malloc_arena_max)  # before any worker thread exists
        application = create_app(settings)
    except SttsError as exc:
        _error(f"{exc.message}")
        raise typer.Exit(2) from None
    config_ = server_config(application, settings)
    server = _draining_server_class()(config_, application)
    server.run()
    if application.state.workers_left:
        # An engine call that cannot be interrupted outlived the grace period; its
        # request was answered already. Waiting for it would break shutdown_grace_s.
        logging.shutdown()
        os._exit(0)
    raise typer.Exit(0)


def _serve_on_ray(
    address: str,
    config: Path | None,
    overrides: dict[str, Any],
    scaling: tuple[int, int | None, int | None, float | None, float],
) -> None:
    """``stts serve --ray``: the app as a Ray Serve deployment, until SIGINT/SIGTERM."""
    try:
        from stts.raycluster.serve import Scaling, run

        settings = _load_settings(config, **overrides)
        run(address, settings, Scaling(*scaling))
    except SttsError as exc:
        _error(f"{exc.message}")
        raise typer.Exit(2) from None


def _draining_server_class() -> Any:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn, but SIGTERM first flips the app to draining: new requests get 503."""

        def __init__(self, config: uvicorn.Config, application: object) -> None:
            super().__init__(config)
            self.application = application

        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            # uvicorn closes every connection at once here (WebSockets with 1012); live
            # sessions get shutdown_grace_s like requests do: the app ends them at the
            # abort (an error event, then a close), uvicorn's own timeout is the backstop.
            live = {
                c
                for c in self.server_state.connections
                if type(c).__module__.startswith("uvicorn.protocols.websockets")
            }
            self.server_state.connections.difference_update(live)
            await super().shutdown(sockets)

        def handle_exit(self, sig: int, frame: object) -> None:
            self.application.state.stop.request()  # type: ignore[attr-defined]
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            # A drained SIGTERM is a clean stop: exit 0 instead of re-raising the signal.
            if sig == signal.SIGTERM:
                self._captured_signals = [s for s in self._captured_signals if s != sig]

    return DrainingServer


# -- stts jobs: a running server's jobs API (client side only: stts.jobs_client) ----------

jobs_app = typer.Typer(
    name="jobs",
    help="Submit long recordings to a running server as jobs; follow them; fetch results.",
    no_args_is_help=True,
    cls=PlainHelpGroup,
)
app.add_typer(jobs_app)

UrlOpt = Annotated[
    str,
    typer.Option("--url", "--server", envvar="STTS_URL", help="the server", show_default=True),
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="STTS_API_KEY", help="API key"),
]
JobIdArg = Annotated[str, typer.Argument(metavar="ID", help="the job's id (job_...)")]
_DEFAULT_URL = "http://127.0.0.1:8000"
# The job or the file is at fault (exit 1); anything else, like an unreachable server, a
# refused key or a bad option, is a usage or set-up error (exit 2), as for transcribe.
_JOB_OR_FILE_CODES = {
    "job_not_found",
    "job_not_finished",
    "invalid_audio",
    "empty_audio",
    "corrupt_audio",
    "unsupported_media",
    "audio_too_large",
    "audio_too_long",
}


def _jobs_failed(exc: Any) -> typer.Exit:
    """One line for a JobsClientError, and the exit status it gets."""
    _error(exc.message)
    return typer.Exit(1 if exc.code in _JOB_OR_FILE_CODES else 2)


def _job_line(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    total = progress.get("total_s")
    done = f"{progress.get('done_s', 0):.1f}"
    where = f"{done} of {total:.1f} s ({progress.get('fraction', 0):.0%})" if total else done
    line = f"{job['id']}  {job['status']}  {where}  {job.get('engine') or '-'}"
    error = job.get("error")
    if error:
        line += f"  error: {error.get('message') or error.get('code')}"
    return line


def _print_text(text: str, output: Path | None) -> None:
    if output is None:
        out.print(
            text,
            end="" if text.endswith("\n") else "\n",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"[green]wrote[/green] {escape(str(output))}", highlight=False)


FormatOpt = Annotated[
    ResponseFormat,
    typer.Option(
        "--format",
        "-f",
        help="result format",
        metavar="|".join(f.value for f in ResponseFormat),
        parser=_choice(ResponseFormat),
    ),
]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="write the result to this file")
]


@jobs_app.command("submit", cls=PlainHelpCommand)
def jobs_submit(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="the recording")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="model or engine (default: whisper-1)")
    ] = None,
    language: Annotated[
        str | None, typer.Option("--language", "-l", help="e.g. en; default: detect")
    ] = None,
    task: Annotated[
        TaskChoice,
        typer.Option(
            "--task",
            help="transcribe, or translate to English",
            metavar="transcribe|translate",
            parser=_choice(TaskChoice),
        ),
    ] = TaskChoice.transcribe_,
    callback_url: Annotated[
        str | None,
        typer.Option("--callback-url", help="called with a signed event when the job ends"),
    ] = None,
    word_timestamps: Annotated[
        bool, typer.Option("--word-timestamps", help="word-level times")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="wait with a progress bar, then print the result")
    ] = False,
    fmt: FormatOpt = ResponseFormat.text,
    output: OutputOpt = None,
    poll_s: Annotated[float, typer.Option("--poll", help="seconds between polls", min=0.05)] = 1.0,
    raw_rate: Annotated[int, typer.Option(help="sample rate of .raw/.pcm files")] = 16000,
    raw_channels: Annotated[int, typer.Option(help="channels of .raw/.pcm files")] = 1,
    url: UrlOpt = _DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Upload a recording as a job; print its id (with --wait: its result)."""
    from stts.jobs_client import JobsClient, JobsClientError

    if not file.is_file():
        _error(f"{file}: {'not a file' if file.exists() else 'no such file'}")
        raise typer.Exit(2)
    try:
        with JobsClient(url, api_key) as client:
            job = client.submit(
                file,
                model=model,
                language=language,
                task=task.value if task is not TaskChoice.transcribe_ else None,
                callback_url=callback_url,
                word_timestamps=word_timestamps,
                raw_rate=raw_rate,
                raw_channels=raw_channels,
            )
            if not wait:
                out.print(job["id"], highlight=False, markup=False)
                return
            err.print(f"submitted {job['id']}", highlight=False)
            job = _follow(client, job, poll_s)
            if job["status"] != "succeeded":
                _error(_job_line(job))
                raise typer.Exit(1)
            _print_text(client.result(job["id"], fmt.value), output)
    except JobsClientError as exc:
        raise _jobs_failed(exc) from None
    except OSError as exc:
        _error(f"{exc.filename or file}: {exc.strerror or exc}")
        raise typer.Exit(1) from None


def _follow(client: Any, job: dict[str, Any], poll_s: float) -> dict[str, Any]:
    """Poll until the job has finished, with a progress bar of audio seconds on a
    terminal; Ctrl-C leaves the job running on the server."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[where]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )

    def update(seen: dict[str, Any]) -> None:
        p = seen.get("progress") or {}
        total = p.get("total_s") or 0.0
        progress.update(
            bar,
            description=f"{seen['id']} {seen['status']}",
            total=max(total, 0.01),
            completed=p.get("done_s", 0.0) if total else 0.0,
            where=f"{p.get('done_s', 0.0):.0f}/{total:.0f} s" if total else "",
        )

    try:
        with progress:
            bar = progress.add_task(job["id"], total=None, where="")
            finished: dict[str, Any] = client.wait(job["id"], on_update=update, poll_s=poll_s)
            return finished
    except KeyboardInterrupt:
        err.print(
            f"stopped waiting; the job goes on: stts jobs status {job['id']}", highlight=False
        )
        raise typer.Exit(130) from None


@jobs_app.command("status", cls=PlainHelpCommand)
def jobs_status(
    job_id: JobIdArg,
    as_json: Annotated[bool, typer.Option("--json", help="the job as JSON")] = False,
    url: UrlOpt = _DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """A job's status, progress and engine (and its error when it failed)."""
    from stts.jobs_client import JobsClient, JobsClientError

    try:
        with JobsClient(url, api_key) as client:
            job = client.status(job_id)
    except JobsClientError as exc:
        raise _jobs_failed(exc) from None
    if as_json:
        out.print_json(json.dumps(job))
    else:
        out.print(_job_line(job), highlight=False, markup=False, soft_wrap=True)


@jobs_app.command("result", cls=PlainHelpCommand)
def jobs_result(
    job_id: JobIdArg,
    fmt: FormatOpt = ResponseFormat.text,
    output: OutputOpt = None,
    url: UrlOpt = _DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """A finished job's transcript (exit 1 while it is not done)."""
    from stts.jobs_client import JobsClient, JobsClientError

    try:
        with JobsClient(url, api_key) as client:
            text = client.result(job_id, fmt.value)
    except JobsClientError as exc:
        raise _jobs_failed(exc) from None
    try:
        _print_text(text, output)
    except OSError as exc:
        _error(f"{output}: {exc.strerror or exc}")
        raise typer.Exit(1) from None


@jobs_app.command("list", cls=PlainHelpCommand)
def jobs_list(
    status: Annotated[
        str | None, typer.Option("--status", help="queued, running, succeeded, failed, cancelled")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="jobs to show", min=1, max=100)] = 20,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="the page after this one (printed when more)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the page as JSON")] = False,
    url: UrlOpt = _DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Your jobs, newest first."""
    from stts.jobs_client import JobsClient, JobsClientError

    try:
        with JobsClient(url, api_key) as client:
            page = client.list_jobs(status, limit, cursor)
    except JobsClientError as exc:
        raise _jobs_failed(exc) from None
    if as_json:
        out.print_json(json.dumps(page))
        return
    for job in page["data"]:
        line = f"{_job_line(job)}  {job.get('filename') or ''}"
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    if page.get("has_more"):
        err.print(f"more: --cursor {page['next_cursor']}", highlight=False)


@jobs_app.command("cancel", cls=PlainHelpCommand)
def jobs_cancel(job_id: JobIdArg, url: UrlOpt = _DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """Cancel a queued or running job, or delete a finished one (audio and result go)."""
    from stts.jobs_client import JobsClient, JobsClientError

    try:
        with JobsClient(url, api_key) as client:
            job = client.cancel(job_id)
    except JobsClientError as exc:
        raise _jobs_failed(exc) from None
    verb = "deleted" if job.get("deleted") else "cancelled"
    out.print(f"{job['id']} {verb}", highlight=False, markup=False)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
