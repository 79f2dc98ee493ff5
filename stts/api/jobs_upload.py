"""A job's multipart upload, streamed to a file in ``jobs.dir`` as it arrives.

Starlette's form parser spools files to the system temp directory; a job upload of
gigabytes goes straight to its place beside the job database instead, chunk by chunk
(never whole in memory), each chunk counted against ``jobs.max_bytes`` and the disk
quota. The small form fields are kept in memory, bounded in number and size.

A body is complete only once its closing boundary arrived (a body cut short is 400, not
a shorter file); the whole upload is bounded in time (``jobs.upload_timeout_s``, 408),
a stalled one by the app's ``body_timeout_s``; a client that goes away is logged at
info, not as a server error. The partial file is removed in every one of these cases.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from stts.errors import AudioTooLarge, Cancelled, EmptyAudio, InvalidRequest, RequestTimeout

logger = logging.getLogger(__name__)

_MAX_FIELDS = 32
_MAX_FIELD_BYTES = 64 * 1024


@dataclass
class Upload:
    """What arrived: the fields, and the file's name, type and size."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    filename: str | None = None
    content_type: str | None = None
    size: int = 0

    def one(self, name: str) -> str | None:
        """A field given at most once."""
        values = self.fields.get(name, [])
        if len(values) > 1:
            raise InvalidRequest(f"{name} is given more than once", param=name)
        return values[0] if values else None

    def many(self, *names: str) -> list[str]:
        """Every value of fields that may repeat (``a`` and ``a[]``)."""
        return [v for name in names for v in self.fields.get(name, [])]


class _Parts:
    """python-multipart callbacks: fields to memory, the file part to ``out``."""

    def __init__(
        self, upload: Upload, out: BinaryIO, max_bytes: int, account: Callable[[int], None]
    ) -> None:
        self.upload = upload
        self.out = out
        self.max_bytes = max_bytes
        self.account = account
        self.error: Exception | None = None
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._is_file = False
        self._data = bytearray()
        self._files = 0
        self._fields = 0
        self.ended = False  # the closing boundary arrived

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error

    def on_part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._is_file = False
        self._data = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            self._fail(InvalidRequest("a form part has no name"))
            return
        self._name = name.decode("utf-8", "replace")
        if b"filename" in options:
            self._files += 1
            if self._name != "file" or self._files > 1:
                self._fail(InvalidRequest("send exactly one file, in the field 'file'"))
                return
            self._is_file = True
            self.upload.filename = options[b"filename"].decode("utf-8", "replace")[:255]
            content_type = self._headers.get(b"content-type")
            self.upload.content_type = content_type.decode("latin-1") if content_type else None
        else:
            self._fields += 1
            if self._fields > _MAX_FIELDS:
                self._fail(InvalidRequest(f"more than {_MAX_FIELDS} form fields"))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        chunk = data[start:end]
        if self._is_file:
            self.upload.size += len(chunk)
            if self.upload.size > self.max_bytes:
                self._fail(
                    AudioTooLarge(
                        f"the audio is larger than the limit for jobs of {self.max_bytes} bytes"
                    )
                )
                return
            try:
                self.account(len(chunk))
            except Exception as exc:
                self._fail(exc)
                return
            self.out.write(chunk)
        else:
            self._data += chunk
            if len(self._data) > _MAX_FIELD_BYTES:
                self._fail(
                    InvalidRequest(
                        f"the form field {self._name!r} is over {_MAX_FIELD_BYTES} bytes"
                    )
                )

    def on_end(self) -> None:
        self.ended = True

    def on_part_end(self) -> None:
        if self.error is None and not self._is_file and self._name is not None:
            value = self._data.decode("utf-8", "replace")
            self.upload.fields.setdefault(self._name, []).append(value)


async def receive_upload(
    request: Request,
    path: Path,
    max_bytes: int,
    account: Callable[[int], None],
    timeout_s: float = math.inf,
) -> Upload:
    """Parse the request's multipart body, writing the file part to ``path`` (created
    here, removed again if anything goes wrong, or if the whole body takes longer than
    ``timeout_s``)."""
    content_type = request.headers.get("content-type", "")
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest("send the job as multipart/form-data with a 'file' field")
    upload = Upload()
    try:
        with path.open("xb") as out:
            parts = _Parts(upload, out, max_bytes, account)
            deadline = time.monotonic() + timeout_s
            try:
                # Inside the try: the constructor refuses a boundary over its limit.
                parser = MultipartParser(
                    boundary,
                    {
                        "on_part_begin": parts.on_part_begin,
                        "on_part_data": parts.on_part_data,
                        "on_part_end": parts.on_part_end,
                        "on_header_field": parts.on_header_field,
                        "on_header_value": parts.on_header_value,
                        "on_header_end": parts.on_header_end,
                        "on_headers_finished": parts.on_headers_finished,
                        "on_end": parts.on_end,
                    },
                )
                async for chunk in request.stream():
                    parser.write(chunk)
                    if parts.error is not None:
                        raise parts.error
                    # A stalled body is body_timeout_s's; this bounds one that trickles.
                    if time.monotonic() > deadline:
                        raise RequestTimeout(
                            f"the upload took longer than {timeout_s:g} s (jobs.upload_timeout_s)"
                        )
                parser.finalize()
            except FormParserError as exc:
                raise InvalidRequest("the multipart body is malformed") from exc
            except ClientDisconnect:
                logger.info("the client went away during a job upload")
                raise Cancelled("the client went away during the upload") from None
            if parts.error is not None:
                raise parts.error
            if not parts.ended:  # cut off (by a proxy, a client) before the closing boundary
                raise InvalidRequest(
                    "the multipart body is incomplete: its closing boundary never arrived"
                )
        if parts._files == 0:
            raise InvalidRequest("the form has no 'file' field", param="file")
        if upload.size == 0:
            raise EmptyAudio("the audio is empty (0 bytes)")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    return upload
