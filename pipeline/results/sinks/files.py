"""Sinks that write JSON lines: rotating files and standard output.

An error no retry can fix while the deployment stays as it is (the path is a directory, or not in a
directory, permission denied, a read-only file system) raises
:class:`~pipeline.core.errors.SinkRejectedError`: the batch goes to the results dead-letter and the sink
says so loudly, instead of retrying the same records for ever. Every other ``OSError`` (a full disk, an
I/O error) is retried: it may pass.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import sys
from pathlib import Path
from types import TracebackType
from typing import IO

from pipeline.core.config import JsonlSinkConfig
from pipeline.core.errors import SinkError, SinkRejectedError
from pipeline.results.record import ResultRecord

log = logging.getLogger(__name__)

_FOR_GOOD = {errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG}


def _file_error(what: str, path: Path, exc: OSError) -> SinkError:
    """A full disk passes, a directory in the way does not (nor a file where a directory should be: EEXIST
    from ``mkdir``)."""
    message = f"{what} {path}: {exc.strerror or exc}"
    if exc.errno in _FOR_GOOD:
        return SinkRejectedError(message, message, split=False)
    return SinkError(message)


class RotatingJsonl:
    """Append JSON lines to ``path``; at ``rotate_bytes`` rename to ``path.1`` (``.1``->``.2``...)."""

    def __init__(self, path: Path, rotate_bytes: int, keep: int) -> None:
        self.path, self.rotate_bytes, self.keep = path, rotate_bytes, keep
        self._f: IO[str] | None = None

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise _file_error("cannot open for writing", self.path, exc) from exc

    def close(self) -> None:
        if self._f is not None:
            f, self._f = self._f, None
            f.close()

    def _discard(self) -> None:
        """After a failed write: drop the file and what it still buffers (the batch is written again)."""
        f, self._f = self._f, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()

    def _rotate(self) -> None:
        self.close()
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self.open()

    def write_lines(self, docs: list[dict[str, object]]) -> None:
        if self._f is None:  # a rotation that could not open the new file: try again now
            self.open()
        assert self._f is not None
        try:
            self._f.write("".join(json.dumps(d) + "\n" for d in docs))
            self._f.flush()
        except OSError as exc:
            self._discard()
            raise _file_error("cannot write", self.path, exc) from exc
        if self._f.tell() >= self.rotate_bytes:
            try:  # the lines are written: a failed rotation must not have them written again
                self._rotate()
            except (OSError, SinkError) as exc:
                log.warning("cannot rotate %s: %s; the next write tries again", self.path, exc)


class JsonlSink:
    def __init__(self, cfg: JsonlSinkConfig) -> None:
        self._out = RotatingJsonl(Path(cfg.path), int(cfg.rotate_mb * 1024 * 1024), cfg.keep)

    def __enter__(self) -> JsonlSink:
        self._out.open()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._out.close()

    def write(self, records: list[ResultRecord]) -> None:
        self._out.write_lines([r.as_dict() for r in records])


class StdoutSink:
    def __enter__(self) -> StdoutSink:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        sys.stdout.flush()

    def write(self, records: list[ResultRecord]) -> None:
        sys.stdout.write("".join(json.dumps(r.as_dict()) + "\n" for r in records))
        sys.stdout.flush()
