"""Many files, one command (``stts batch``): inputs, a resumable results log, output files.

A batch is planned on the driver: the inputs are expanded (paths, directories, globs,
manifests), each is hashed, and an input whose result is already in ``results.jsonl``
for the same content and options is skipped. What is left is transcribed, here on the
engine manager's pools (:func:`run_local`) or on a Ray cluster (:mod:`stts.ray_batch`,
the only module that imports Ray); both hand each outcome to :meth:`Batch.finish`,
which writes the output files and then appends the result line. A line is therefore
only ever written for an input whose files are complete, and a rerun after a crash or
Ctrl-C does what is left. A bad file is recorded with its error and the batch goes on.
"""

from __future__ import annotations

import concurrent.futures
import csv
import glob
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stts.audio import RawFormat, decode_audio
from stts.errors import AudioError, AudioTooLarge, AudioTooLong, InvalidRequest, SttsError
from stts.formats import FILE_SUFFIXES, ResponseFormat, render

if TYPE_CHECKING:
    from stts.config import Settings
    from stts.engines.base import Task, TranscribeOptions
    from stts.service import EngineManager

__all__ = [
    "AUDIO_SUFFIXES",
    "Batch",
    "BatchRequest",
    "WorkItem",
    "collect_inputs",
    "parse_formats",
    "run_local",
    "transcribe_item",
]

AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".webm"}
    | {".mka", ".mkv", ".wma", ".aif", ".aiff", ".amr", ".raw", ".pcm"}
)
"""What a directory walk picks up (files named on the command line are taken as they are)."""
RAW_SUFFIXES = frozenset({".raw", ".pcm"})
RESULTS_NAME = "results.jsonl"

_FORMAT_NAMES = {
    "txt": ResponseFormat.text,
    "text": ResponseFormat.text,
    "srt": ResponseFormat.srt,
    "vtt": ResponseFormat.vtt,
    # A file archive wants the times: batch's json is the full transcript (segments, words).
    "json": ResponseFormat.verbose_json,
    "verbose_json": ResponseFormat.verbose_json,
}
_GLOB_CHARS = frozenset("*?[")
_HASH_CHUNK = 1 << 20


def parse_formats(value: str) -> tuple[ResponseFormat, ...]:
    """``txt,srt`` -> the formats, in order, once each; InvalidRequest naming a bad one."""
    formats: list[ResponseFormat] = []
    for name in (part.strip().lower() for part in value.split(",")):
        if not name:
            continue
        fmt = _FORMAT_NAMES.get(name)
        if fmt is None:
            raise InvalidRequest(
                f"unknown format {name!r}; choose from txt, srt, vtt, json", param="format"
            )
        if fmt not in formats:
            formats.append(fmt)
    return tuple(formats)


# -- inputs --------------------------------------------------------------------


def _walk(directory: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in AUDIO_SUFFIXES:
                yield Path(root) / name


def _manifest_paths(manifest: Path) -> Iterator[Path]:
    """One path per line, or CSV / JSON Lines with a ``path`` column; relative paths are
    taken from the manifest's own directory."""
    base = manifest.parent
    suffix = manifest.suffix.lower()
    with manifest.open(encoding="utf-8", newline="") as fh:
        if suffix == ".csv":
            reader = csv.DictReader(fh)
            if "path" not in (reader.fieldnames or []):
                raise InvalidRequest(f"{manifest}: a CSV manifest needs a 'path' column")
            entries: Iterable[str] = (row["path"] or "" for row in reader)
        elif suffix in (".jsonl", ".ndjson"):
            entries = _jsonl_paths(manifest, fh)
        else:
            entries = (line.rstrip("\n") for line in fh if not line.lstrip().startswith("#"))
        for entry in entries:
            if entry.strip():
                yield base / entry.strip()


def _jsonl_paths(manifest: Path, lines: Iterable[str]) -> Iterator[str]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise InvalidRequest(f"{manifest}:{number}: not a JSON object") from None
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise InvalidRequest(f"{manifest}:{number}: needs a string 'path' field")
        yield row["path"]


def collect_inputs(specs: Sequence[str], manifests: Sequence[Path] = ()) -> dict[Path, str]:
    """Files named, found in directories (recursively), matched by globs or listed in
    manifests: absolute, each once, in the order given, with the output name each gets
    (see :func:`output_names`). InvalidRequest for a name that matches nothing (a typo is
    better said before hours of work than after)."""
    found: dict[Path, str] = {}

    def add(path: Path, relative: str) -> None:
        found.setdefault(Path(os.path.abspath(path)), relative)

    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            for match in _walk(path):
                add(match, match.relative_to(path).as_posix())
        elif path.exists() or not _GLOB_CHARS & set(spec):
            add(path, path.name)  # a missing file is recorded as that file's error
        else:
            matches = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
            if not matches:
                raise InvalidRequest(f"{spec}: no file matches")
            for match in matches:
                if match.is_dir():
                    for inner in _walk(match):
                        add(inner, f"{match.name}/{inner.relative_to(match).as_posix()}")
                else:
                    add(match, match.name)
    for manifest in manifests:
        try:
            for entry in _manifest_paths(manifest):
                add(entry, entry.name)
        except OSError as exc:
            raise InvalidRequest(f"{manifest}: {exc.strerror or exc}") from None
    return output_names(found)


def output_names(relative: dict[Path, str]) -> dict[Path, str]:
    """Each input's output name (no format suffix): the file's name, or its path under the
    directory that was named, without its extension. Where two inputs would share one,
    they keep their extensions (``a.wav``, ``a.mp3``), and where that is not enough either
    (the same name in two folders) a short hash of the folder is added."""
    names = {path: str(Path(rel).with_suffix("")) for path, rel in relative.items()}
    for stage in ("extension", "folder"):
        counts: dict[str, int] = {}
        for name in names.values():
            counts[name] = counts.get(name, 0) + 1
        for path, name in names.items():
            if counts[name] > 1:
                folder = hashlib.sha256(str(path.parent).encode()).hexdigest()[:8]
                names[path] = relative[path] if stage == "extension" else f"{name}~{folder}"
    return names


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- the request and the work --------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """What every input of one batch is transcribed with."""

    engine: str | None = None
    model: str | None = None
    language: str | None = None
    task: Task = "transcribe"
    word_timestamps: bool = False
    formats: tuple[ResponseFormat, ...] = (ResponseFormat.text,)
    raw: RawFormat = field(default_factory=RawFormat)

    def options(self) -> TranscribeOptions:
        """The engine options."""
        from stts.engines.base import TranscribeOptions

        return TranscribeOptions(
            language=self.language, task=self.task, word_timestamps=self.word_timestamps
        )

    def key(self, engine: str, model: str) -> str:
        """What a stored result must have been made with to be reused: the resolved engine
        and model and the options that change the text (not the output formats: a missing
        file is noticed on its own)."""
        raw = asdict(self.raw)
        described = [engine, model, self.language, self.task, self.word_timestamps, raw]
        return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One input to transcribe, as planned on the driver."""

    path: str
    sha256: str
    size: int
    mtime_ns: int
    name: str
    """Output name under the output directory, without the format's suffix."""


def transcribe_item(
    manager: EngineManager,
    settings: Settings,
    request: BatchRequest,
    options: TranscribeOptions,
    path: str,
) -> dict[str, Any]:
    """Decode and transcribe one file: the result fields and ``rendered`` (format value ->
    text), or ``error``/``error_type`` for a file that failed. Never raises SttsError."""
    started = time.perf_counter()
    result: dict[str, Any] = {"duration": None, "engine": None, "model": None}
    result |= {"language": None, "text": None, "error": None, "error_type": None}
    try:
        raw = request.raw if Path(path).suffix.lower() in RAW_SUFFIXES else None
        audio = decode_audio(Path(path), raw=raw, limits=settings.audio.limits())
        result["duration"] = round(audio.duration, 3)
        transcript = manager.transcribe(
            audio, engine=request.engine, model=request.model, options=options
        )
        result |= {"engine": transcript.engine, "model": transcript.model}
        result |= {"language": transcript.language, "text": transcript.text}
        result["rendered"] = {fmt.value: render(transcript, fmt) for fmt in request.formats}
    except SttsError as exc:
        result |= {"error": exc.message, "error_type": _error_type(exc)}
    except OSError as exc:
        result |= {"error": f"cannot read: {exc.strerror or exc}", "error_type": "unreadable"}
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _error_type(exc: SttsError) -> str:
    """``audio`` for a file whose bytes are at fault (final: the same bytes fail again);
    else the error's code: worth a retry (engine trouble, a limit raised since)."""
    if isinstance(exc, AudioError) and not isinstance(exc, (AudioTooLarge, AudioTooLong)):
        return "audio"
    return exc.code


# -- the batch -----------------------------------------------------------------


@dataclass
class Summary:
    """What one run did."""

    planned: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0


class Batch:
    """One output directory: its results log, what is left to do, and finishing items."""

    def __init__(self, output_dir: Path, request: BatchRequest, key: str) -> None:
        self.output_dir = output_dir
        self.request = request
        self.key = key
        self.results_path = output_dir / RESULTS_NAME
        self.summary = Summary()
        self._latest: dict[str, dict[str, Any]] = {}
        self._finished: set[str] = set()
        output_dir.mkdir(parents=True, exist_ok=True)
        self._read_results()
        self._log = self.results_path.open("a", encoding="utf-8")

    def _read_results(self) -> None:
        if not self.results_path.exists():
            return
        with self.results_path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the torn last line of a run that was killed
                if isinstance(record, dict) and isinstance(record.get("path"), str):
                    self._latest[record["path"]] = record

    def outputs(self, name: str) -> list[Path]:
        """The files an input named ``name`` gets, one per requested format."""
        return [self.output_dir / (name + FILE_SUFFIXES[fmt]) for fmt in self.request.formats]

    def plan(self, inputs: dict[Path, str]) -> list[WorkItem]:
        """What is left of ``inputs`` (path -> output name, as :func:`collect_inputs` gives):
        every input without a reusable result. An input that cannot be read here is
        recorded at once (it would fail on any worker too)."""
        items: list[WorkItem] = []
        for path, name in inputs.items():
            self.summary.planned += 1
            text = str(path)
            prior = self._latest.get(text)
            try:
                stat = path.stat()
                if not path.is_file():
                    raise IsADirectoryError(0, "not a regular file")
                same_file = (
                    prior is not None
                    and prior.get("size") == stat.st_size
                    and prior.get("mtime_ns") == stat.st_mtime_ns
                )
                sha = prior["sha256"] if same_file and prior else file_sha256(path)
            except OSError as exc:
                self.finish_error(text, f"cannot read: {exc.strerror or exc}", "unreadable")
                continue
            item = WorkItem(text, sha, stat.st_size, stat.st_mtime_ns, name)
            if prior is not None and self._reusable(prior, item):
                self.summary.skipped += 1
                self._finished.add(text)
                continue
            items.append(item)
        return items

    def _reusable(self, prior: dict[str, Any], item: WorkItem) -> bool:
        if prior.get("sha256") != item.sha256 or prior.get("options") != self.key:
            return False
        if prior.get("error"):
            # The same bytes fail the same way; an engine or read failure may not recur.
            return bool(prior.get("error_type") == "audio")
        return all(p.exists() for p in self.outputs(item.name))

    def finish(self, item: WorkItem, result: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """Write an item's output files, then its result line; the line, as written."""
        rendered: dict[str, str] = result.pop("rendered", None) or {}
        outputs: list[str] = []
        if not result.get("error"):
            for fmt, target in zip(self.request.formats, self.outputs(item.name), strict=True):
                _write_atomic(target, rendered[fmt.value])
                outputs.append(target.relative_to(self.output_dir).as_posix())
        record = {
            "path": item.path,
            "sha256": item.sha256,
            **{k: result.get(k) for k in ("duration", "engine", "model", "language", "text")},
            "error": result.get("error"),
            "seconds": result.get("seconds"),
            "error_type": result.get("error_type"),
            "options": self.key,
            "size": item.size,
            "mtime_ns": item.mtime_ns,
            "outputs": outputs,
            **extra,
        }
        self._append(record)
        if record["error"]:
            self.summary.failed += 1
        else:
            self.summary.done += 1
            self.summary.audio_seconds += record["duration"] or 0.0
        return record

    def finish_error(self, path: str, message: str, error_type: str) -> None:
        """Record an input that failed before any work could start."""
        record = dict.fromkeys(("sha256", "duration", "engine", "model", "language", "text"))
        record |= {"path": path, "error": message, "seconds": 0.0, "error_type": error_type}
        record |= {"options": self.key, "outputs": []}
        self._append(record)
        self.summary.failed += 1

    def finished(self, path: str) -> bool:
        """Whether this run already has a line (or a reused one) for ``path``."""
        return path in self._finished

    def _append(self, record: dict[str, Any]) -> None:
        self._log.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._log.flush()  # a killed run keeps every line it finished
        self._latest[record["path"]] = record
        self._finished.add(record["path"])

    def close(self) -> None:
        """Close the log and compact it: one line per input, the newest."""
        self._log.close()
        if not self._latest:
            return
        tmp = self.results_path.with_name(f".{RESULTS_NAME}.{os.getpid()}.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as fh:
                for record in self._latest.values():
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            os.replace(tmp, self.results_path)
        finally:
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_atomic(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def run_local(
    batch: Batch,
    items: Sequence[WorkItem],
    manager: EngineManager,
    settings: Settings,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> Summary:
    """Transcribe ``items`` on this machine's engine pools, as many at once as the engine
    has workers (decoding overlaps the engine's work); results in completion order."""
    request = batch.request
    key = manager.resolve(request.engine, request.model)
    options = manager.check_options(key, request.options())
    workers = settings.engine_settings(key[0]).workers
    started = time.perf_counter()
    pending = iter(items)
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="stts-batch") as pool:
        running: dict[concurrent.futures.Future[dict[str, Any]], WorkItem] = {}

        def submit_next() -> None:
            item = next(pending, None)
            if item is not None:
                future = pool.submit(
                    transcribe_item, manager, settings, request, options, item.path
                )
                running[future] = item

        for _ in range(workers):
            submit_next()
        try:
            while running:
                done, _ = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    record = batch.finish(running.pop(future), future.result())
                    if on_record is not None:
                        on_record(record)
                    submit_next()
        finally:
            for future in running:
                future.cancel()
    batch.summary.wall_seconds = time.perf_counter() - started
    return batch.summary
