"""The publishing side of `vigil bench pipeline`: processes that put frames on the bus as ingest workers do.

One Python process publishes a few thousand raw frames a second (each XADD costs it ~250 µs); one GPU
classifies tens of thousands. So the bench spreads its cameras over ``publishers`` processes, each with
its own :class:`~pipeline.bus.publisher.FrameBus` over every Redis instance, started together on an event
so the measured window is saturated from its first moment. Two phases:

* ``saturate``: keep ``backlog`` frames of the process's cameras queued (topped up every 20 ms: polling
  Redis harder would steal CPU from the replicas being measured), so the replicas never wait;
* ``paced``: publish at ``rate`` frames/s in total, like cameras, for the frame-age percentiles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from typing import Any, Literal

import numpy as np

from pipeline.bus.publisher import BusOptions, FrameBus
from pipeline.bus.wire import Encoding, FrameMessage, ZoneCrop
from pipeline.core.bus_layout import BusClients, BusLayout
from pipeline.core.config import FULL_ZONE

Phase = Literal["saturate", "paced"]
PACED_SEQ = 10_000_000  # paced frames' seq start: their results are told apart from the saturating ones


@dataclass(frozen=True)
class PublisherSpec:
    """One publisher process's share of a phase."""

    urls: list[str]
    cameras: list[str]
    frames: np.ndarray
    encoding: Encoding
    phase: Phase
    seconds: float
    backlog: int = 0  # saturate: frames of these cameras kept queued
    rate: float = 0.0  # paced: frames/s of these cameras
    zones: int = 1  # crops per frame: the whole picture and zones z1.. (as ingest publishes a camera's zones)


def _message(spec: PublisherSpec, stream_id: str, seq: int) -> FrameMessage:
    """Frame ``seq`` of a camera, with ``spec.zones`` crops (each a different picture of ``spec.frames``)."""
    n = len(spec.frames)
    crops = tuple(ZoneCrop(FULL_ZONE if z == 0 else f"z{z}", spec.frames[(seq + z) % n]) for z in range(spec.zones))
    return FrameMessage(stream_id, seq, time.time_ns(), crops)


def done_frames(clients: BusClients, cameras: list[str]) -> int:
    """Frames of ``cameras`` no longer queued: classified, or dropped as stale (an overloaded machine)."""
    by_shard: dict[int, list[str]] = {}
    for stream_id in cameras:
        by_shard.setdefault(clients.layout.shard_of(stream_id), []).append(stream_id)
    total = 0
    for shard, stream_ids in by_shard.items():  # one round trip per shard: the polling must not load Redis
        with clients.client(shard).pipeline(transaction=False) as p:
            for stream_id in stream_ids:
                p.hmget(clients.keys(shard).stats(stream_id), "inferred", "dropped_stale")
            total += sum(int(n or 0) for pair in p.execute() for n in pair)
    return total


def _bus(spec: PublisherSpec) -> FrameBus:
    return FrameBus(BusOptions(layout=BusLayout(spec.urls), maxlen=500, encoding=spec.encoding, jpeg_quality=90,
                               socket_timeout_s=5.0, backoff_base_s=0.5, backoff_cap_s=2.0))


def _saturate(bus: FrameBus, clients: BusClients, spec: PublisherSpec) -> None:
    published, seq, t0 = 0, 0, time.perf_counter()
    start_done = done_frames(clients, spec.cameras)
    while time.perf_counter() - t0 < spec.seconds:
        queued = published - (done_frames(clients, spec.cameras) - start_done)
        for _ in range(max(0, (spec.backlog - queued) // len(spec.cameras))):
            for stream_id in spec.cameras:
                bus.publish(_message(spec, stream_id, seq))
                published += 1
            seq += 1
        time.sleep(0.02)


def _paced(bus: FrameBus, spec: PublisherSpec) -> None:
    interval, seq, t0 = len(spec.cameras) / spec.rate, 0, time.perf_counter()
    while time.perf_counter() - t0 < spec.seconds:
        delay = t0 + seq * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        for stream_id in spec.cameras:
            bus.publish(_message(spec, stream_id, PACED_SEQ + seq))
        seq += 1


def publish(spec: PublisherSpec, ready: Any, go: Event) -> None:
    """A publisher process: connect, say it is ready, wait for ``go``, run its phase."""
    clients = BusLayout(spec.urls).connect(5.0)
    try:
        with _bus(spec) as bus:
            ready.put(True)
            go.wait(60)
            if spec.phase == "saturate":
                _saturate(bus, clients, spec)
            else:
                _paced(bus, spec)
    finally:
        clients.close()
