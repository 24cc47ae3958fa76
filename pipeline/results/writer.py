"""Where a result is written: result records onto ``vigil:results``, their frames acknowledged.

:meth:`ResultWriter.write` does, per bus shard, in one atomic script
(:data:`pipeline.bus.scripts.WRITE_RESULTS`, which runs at ``maxmemory`` too): XADD each frame's
records (one per zone) to the results stream (``MAXLEN ~ redis.results_maxlen``), XACK the frames on
their camera's stream for the inference group (a frame already answered, e.g. reclaimed while its first
batch was being written, gets no second result), count them in ``vigil:stats:<camera>`` (``inferred``,
and ``inferred@<zone>`` per record), remove the
acknowledged frames from the camera's stream (:data:`pipeline.bus.scripts.TRIM_ACKED`: Redis holds
only frames in flight) and forget their failure reasons. So a frame is acknowledged exactly when its
result exists, and the counters that the accounting identity ``published = inferred + dropped +
dead_lettered`` reads are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pipeline.bus.scripts import BusScripts
from pipeline.core.bus_layout import BusClients
from pipeline.core.keys import INFERENCE_GROUP
from pipeline.core.redis_errors import redis_errors
from pipeline.results.record import ResultRecord


class FrameRef(Protocol):
    """The frame a result belongs to: where it sits on the bus (a :class:`pipeline.bus.reader.Delivery`)."""

    @property
    def shard(self) -> int: ...

    @property
    def stream_id(self) -> str: ...

    @property
    def entry_id(self) -> str: ...


class ResultWriter:
    """Writes results through the bus's clients, one per shard (borrowed: the reader owns them)."""

    def __init__(self, clients: BusClients, results_maxlen: int) -> None:
        self._clients = clients
        self._scripts = [BusScripts(c) for _, c, _ in clients]
        self._maxlen = results_maxlen

    def write(self, done: Sequence[tuple[FrameRef, Sequence[ResultRecord]]]) -> None:
        """Write each frame's results (one per zone), acknowledge the frames and count them: one transaction per
        shard."""
        by_shard: dict[int, list[tuple[FrameRef, Sequence[ResultRecord]]]] = {}
        for frame, records in done:
            by_shard.setdefault(frame.shard, []).append((frame, records))
        for idx, items in by_shard.items():
            with redis_errors("writing results (WRITE_RESULTS)", self._clients.where(idx)):
                self._write_shard(idx, items)

    def _write_shard(self, idx: int, items: list[tuple[FrameRef, Sequence[ResultRecord]]]) -> None:
        cameras: dict[str, int] = {}  # camera -> its 1-based position among the script's keys
        frames: list[str | int] = []
        for frame, records in items:
            position = cameras.setdefault(frame.stream_id, len(cameras) + 1)
            frames += [position, frame.entry_id, len(records)]
            for record in records:
                fields = record.to_fields()
                frames += [record.zone, fields["v"], fields["stream"], fields["json"]]
        names = self._clients.keys(idx)
        keys = [names.results, names.failures]
        for stream_id in cameras:
            keys += [names.frames(stream_id), names.stats(stream_id)]
        self._scripts[idx].write_results(keys=keys, args=[INFERENCE_GROUP, self._maxlen, len(cameras), *frames],
                                         client=self._clients.client(idx))
