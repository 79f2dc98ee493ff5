"""``stts jobs``: a running server's jobs API, client side only (:mod:`stts.jobs_client`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from stts.cli.common import (
    LanguageOpt,
    PlainHelpCommand,
    PlainHelpGroup,
    RawChannelsOpt,
    RawRateOpt,
    TaskChoice,
    TaskOpt,
    WordTimestampsOpt,
    err,
    error,
    format_option,
    out,
    print_text,
    reason,
)
from stts.formats import ResponseFormat

if TYPE_CHECKING:
    from stts.jobs_client import JobsClient

jobs_app = typer.Typer(
    name="jobs",
    help="Submit long recordings to a running server as jobs; follow them; fetch results.",
    no_args_is_help=True,
    cls=PlainHelpGroup,
)

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


@contextmanager
def _server(url: str, api_key: str | None) -> Iterator[JobsClient]:
    """A client of the server's jobs API; a JobsClientError inside becomes one line on
    stderr and the exit status it gets."""
    from stts.jobs_client import JobsClient, JobsClientError

    try:
        with JobsClient(url, api_key) as client:
            yield client
    except JobsClientError as exc:
        error(exc.message)
        raise typer.Exit(1 if exc.code in _JOB_OR_FILE_CODES else 2) from None


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
        print_text(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"[green]wrote[/green] {escape(str(output))}", highlight=False)


FormatOpt = Annotated[ResponseFormat, format_option("result format")]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="write the result to this file")
]


@jobs_app.command("submit", cls=PlainHelpCommand)
def jobs_submit(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="the recording")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="model or engine (default: whisper-1)")
    ] = None,
    language: LanguageOpt = None,
    task: TaskOpt = TaskChoice.transcribe_,
    callback_url: Annotated[
        str | None,
        typer.Option("--callback-url", help="called with a signed event when the job ends"),
    ] = None,
    word_timestamps: WordTimestampsOpt = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="wait with a progress bar, then print the result")
    ] = False,
    fmt: FormatOpt = ResponseFormat.text,
    output: OutputOpt = None,
    poll_s: Annotated[float, typer.Option("--poll", help="seconds between polls", min=0.05)] = 1.0,
    raw_rate: RawRateOpt = 16000,
    raw_channels: RawChannelsOpt = 1,
    url: UrlOpt = _DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Upload a recording as a job; print its id (with --wait: its result)."""
    if not file.is_file():
        error(f"{file}: {'not a file' if file.exists() else 'no such file'}")
        raise typer.Exit(2)
    try:
        with _server(url, api_key) as client:
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
                error(_job_line(job))
                raise typer.Exit(1)
            _print_text(client.result(job["id"], fmt.value), output)
    except OSError as exc:
        error(f"{exc.filename or file}: {reason(exc)}")
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
    with _server(url, api_key) as client:
        job = client.status(job_id)
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
    with _server(url, api_key) as client:
        text = client.result(job_id, fmt.value)
    try:
        _print_text(text, output)
    except OSError as exc:
        error(f"{output}: {reason(exc)}")
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
    with _server(url, api_key) as client:
        page = client.list_jobs(status, limit, cursor)
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
    with _server(url, api_key) as client:
        job = client.cancel(job_id)
    verb = "deleted" if job.get("deleted") else "cancelled"
    out.print(f"{job['id']} {verb}", highlight=False, markup=False)
