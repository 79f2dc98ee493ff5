"""``stts batch``: many files into an output directory, resumably, locally or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from stts.audio import RawFormat
from stts.cli.common import (
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
    err,
    error,
    exit_on_error,
    file_command_manager,
    reason,
)
from stts.formats import ResponseFormat


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
    engine: EngineOpt = None,
    model: ModelOpt = None,
    language: LanguageOpt = None,
    task: TaskOpt = TaskChoice.transcribe_,
    word_timestamps: WordTimestampsOpt = False,
    raw_rate: RawRateOpt = 16000,
    raw_channels: RawChannelsOpt = 1,
    raw_encoding: RawEncodingOpt = "s16le",
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

    with exit_on_error():
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
        settings, manager = file_command_manager(config, engine, model)
        key = manager.resolve(engine, model)
        manager.check_options(key, request.options())  # a bad language, before any work
    try:
        job = batching.Batch(output_dir, request, request.key(*key))
    except OSError as exc:
        error(f"{output_dir}: {reason(exc)}")
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
                    error(f"{record['path']}: {record['error']}")
                progress.update(bar, advance=1, hours=job.summary.audio_seconds / 3600)

            try:
                with exit_on_error():
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
            except OSError as exc:  # the output directory: full, read-only...
                error(f"{output_dir}: {reason(exc)}")
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
