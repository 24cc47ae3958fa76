"""What an entry of the results stream is: the one decoder every reader of the stream uses.

The results stream (``vigil:results``, one per bus shard) carries two things: result records
(:class:`~pipeline.results.record.ResultRecord`, written by inference) and camera events
(:mod:`pipeline.results.camera_event`, written by ingest). They share the stream on purpose:

* one ordered timeline per camera: a camera's events sit between its results where they happened, so a
  sink sees "stalled" after the last result before it and "live" before the first one after it (a
  stream of their own would need a merge by time, with clocks of different processes);
* the same delivery guarantees for free: one consumer group per sink, one acknowledgement, the same
  retries, take-over and dead-letter; a second stream would double each of them;
* events are few (a transition, not a frame), so they cost the stream nothing.

What tells them apart (the ``kind`` field) is decided here, and nowhere else: a reader (the sink
runner, the console's tail, the live table's read-back) decodes entries with :func:`decode_entry` or
:func:`decode_entries` and gets typed values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from pipeline.core.errors import ResultFormatError
from pipeline.results.camera_event import CameraEvent, camera_event_from_fields, is_camera_event
from pipeline.results.record import ResultRecord

#: What a results-stream entry decodes to.
Entry = ResultRecord | CameraEvent

#: An entry as redis-py returns it: its id, and its fields (None or empty once trimmed while pending).
RawEntry = tuple[bytes, dict[bytes, bytes] | None]


def decode_entry(fields: Mapping[Any, Any]) -> Entry:
    """The result record or camera event in one entry's fields; :class:`ResultFormatError` when it is neither."""
    if is_camera_event(fields):
        return camera_event_from_fields(fields)
    return ResultRecord.from_fields(fields)


def decode_entries(entries: Iterable[RawEntry],
                   on_malformed: Callable[[bytes, ResultFormatError], None] | None = None,
                   ) -> Iterator[tuple[bytes, dict[bytes, bytes], Entry]]:
    """``(id, fields, value)`` of each entry, in order; entries without fields (trimmed while pending) are
    left out, and malformed ones too, after ``on_malformed(id, error)``."""
    for eid, fields in entries:
        if not fields:
            continue
        try:
            value = decode_entry(fields)
        except ResultFormatError as exc:
            if on_malformed is not None:
                on_malformed(eid, exc)
            continue
        yield eid, fields, value
