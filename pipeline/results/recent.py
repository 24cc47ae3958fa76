"""The newest results and camera events of each camera, read back from the tail of the results streams.

For what shows a camera's present (the live table of ``vigil run``, the console): a bounded read of
the newest entries (XREVRANGE with a COUNT), never a scan of the whole stream. Malformed entries are
skipped here (the sinks report them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.core.bus_layout import BusClients
from pipeline.core.errors import BusError
from pipeline.core.redis_errors import redis_errors
from pipeline.results.camera_event import CameraEvent
from pipeline.results.entry import decode_entries
from pipeline.results.record import ResultRecord, headline


@dataclass
class Recent:
    """One camera's newest results and camera events, oldest first."""

    results: list[ResultRecord] = field(default_factory=list)
    events: list[CameraEvent] = field(default_factory=list)

    @property
    def latest(self) -> ResultRecord | None:
        """The newest result of the whole picture (:func:`~pipeline.results.record.headline`)."""
        return headline(self.results)


def read_recent(clients: BusClients, stream_ids: Iterable[str], entries: int) -> dict[str, Recent]:
    """The newest ``entries`` of every shard's results stream, split by camera (only ``stream_ids``)."""
    out = {stream_id: Recent() for stream_id in stream_ids}
    for idx, client, keys in clients:
        try:
            with redis_errors("reading the newest results (XREVRANGE)", clients.where(idx)):
                tail = client.xrevrange(keys.results, count=entries)
        except BusError:
            continue  # that instance is down: its cameras show what the others have (nothing)
        for _, _, value in decode_entries(reversed(tail)):
            if value.stream not in out:
                continue
            if isinstance(value, ResultRecord):
                out[value.stream].results.append(value)
            else:
                out[value.stream].events.append(value)
    return out
