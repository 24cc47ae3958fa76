"""Sinks that write JSON lines: rotating files and standard output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import TracebackType
from typing import IO

from pipeline.core.errors import SinkError
from pipeline.core.sink_config import JsonlSinkConfig
from pipeline.results.record import ResultRecord


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
            raise SinkError(f"cannot open {self.path} for writing: {exc.strerror}") from exc

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def _rotate(self) -> None:
        self.close()
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self.open()

    def write_lines(self, docs: list[dict[str, object]]) -> None:
        if self._f is None:
            raise SinkError(f"sink for {self.path} is not open")
        try:
            self._f.write("".join(json.dumps(d) + "\n" for d in docs))
            self._f.flush()
            if self._f.tell() >= self.rotate_bytes:
                self._rotate()
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror}") from exc


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
