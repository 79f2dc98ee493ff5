"""``stts transcribe`` and ``stts detect-language``: audio files in, one answer a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from stts.audio import RawFormat, decode_audio
from stts.cli.common import (
    RAW_SUFFIXES,
    ConfigOpt,
    EngineOpt,
    LanguageOpt,
    ModelOpt,
    RawChannelsOpt,
    RawEncodingOpt,
    RawRateOpt,
    TaskChoice,
    TaskOpt,
    WordTimestampsOpt,
    check_file,
    err,
    error,
    exit_on_error,
    file_command_manager,
    format_option,
    out,
    print_text,
    reason,
)
from stts.errors import SttsError
from stts.formats import FILE_SUFFIXES, ResponseFormat, render
from stts.samples import sample_path


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
    engine: EngineOpt = None,
    model: ModelOpt = None,
    language: LanguageOpt = None,
    task: TaskOpt = TaskChoice.transcribe_,
    fmt: Annotated[ResponseFormat, format_option("output format")] = ResponseFormat.text,
    word_timestamps: WordTimestampsOpt = False,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="write one file per input here")
    ] = None,
    raw_rate: RawRateOpt = 16000,
    raw_channels: RawChannelsOpt = 1,
    raw_encoding: RawEncodingOpt = "s16le",
    config: ConfigOpt = None,
) -> None:
    """Transcribe audio files; with -o, write one output file per input."""
    from stts.engines.base import TranscribeOptions

    files = [*(files or []), *([sample_path()] if sample else [])]
    if not files:
        error("no audio given: name one or more files, or --sample")
        raise typer.Exit(2)
    with exit_on_error():
        settings, manager = file_command_manager(config, engine, model)
        raw = RawFormat(raw_rate, raw_channels, raw_encoding)  # type: ignore[arg-type]
        # A language the engine doesn't know is a usage error, said before any decoding.
        options = manager.check_options(
            manager.resolve(engine, model),
            TranscribeOptions(language=language, task=task.value, word_timestamps=word_timestamps),
        )
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
                check_file(path)
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
                    print_text(text)
                else:
                    target = output_dir / (path.stem + FILE_SUFFIXES[fmt])
                    target.write_text(text, encoding="utf-8")
                    err.print(f"[green]wrote[/green] {target}", highlight=False)
            except (SttsError, OSError) as exc:
                failures += 1
                error(f"{path}: {reason(exc)}")
            progress.advance(overall)
    if failures:
        raise typer.Exit(1)


def detect_language(
    files: Annotated[list[Path], typer.Argument(metavar="FILE", help="audio files")],
    engine: EngineOpt = None,
    model: ModelOpt = None,
    top: Annotated[int, typer.Option(help="how many languages to list per file", min=1)] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    config: ConfigOpt = None,
) -> None:
    """Say which language each file is spoken in (Whisper, multilingual models)."""
    with exit_on_error():
        settings, manager = file_command_manager(config, engine, model, detect=True)
    failures = 0
    with manager.session():
        for path in files:
            try:
                check_file(path)
                audio = decode_audio(path, limits=settings.audio.limits())
                guess = manager.detect_language(audio, engine=engine, model=model, top=top)
            except (SttsError, OSError) as exc:
                failures += 1
                error(f"{path}: {reason(exc)}")
                continue
            if as_json:  # JSON Lines: one compact object per file
                line = json.dumps({"file": str(path), **guess.as_dict()}, ensure_ascii=False)
                out.print(line, highlight=False, markup=False, soft_wrap=True)
            else:
                ranked = ", ".join(f"{lang} {p:.2f}" for lang, p in guess.ranked)
                out.print(f"{path}: {guess.language}  ({ranked})", highlight=False, markup=False)
    if failures:
        raise typer.Exit(1)
