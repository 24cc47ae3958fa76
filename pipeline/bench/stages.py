"""`vigil bench stages`: what each step of the data plane costs in CPU per frame, and the cores it needs.

Every step runs the product's own code on one Redis (an embedded one unless a URL is given), one step
at a time, so its cost is its own:

* **encode**: :func:`~pipeline.bus.wire.encode_frame` (raw: a header and the pixels; jpeg: also the
  JPEG encoding at ``redis.jpeg_quality``), in this process;
* **publish**: :meth:`FrameBus.publish <pipeline.bus.publisher.FrameBus.publish>` (encode, then XADD
  with its count in one transaction), in this process and in Redis;
* **read**: :meth:`FrameConsumer.read_batch <pipeline.bus.reader.FrameConsumer.read_batch>` with the
  inference consumer group (the freshness script), in this process and in Redis;
* **decode**: :func:`~pipeline.bus.wire.decode_frame` of each delivery (jpeg: the JPEG decoding);
* **result write + ack**: :meth:`ResultWriter.write <pipeline.results.writer.ResultWriter.write>` (per
  frame: XACK, result XADD and its count, in one script), in this process and in Redis.

This process's CPU is ``time.process_time``; Redis' is ``used_cpu_user + used_cpu_sys`` from
``INFO cpu``. The model itself is not among the steps: its cost is what `vigil bench model` measures.
A step's cores at a rate are its CPU seconds per frame times that rate: how many cores a machine needs
for it, whichever processes run it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.bus.publisher import BusOptions, FrameBus
from pipeline.bus.reader import ConsumerOptions, Delivery, FrameConsumer
from pipeline.bus.wire import Encoding, FrameMessage, decode_frame, encode_frame
from pipeline.core.bus_layout import BusLayout
from pipeline.core.classification import FrameClassification, Label
from pipeline.core.config import FULL_ZONE
from pipeline.core.keys import frames_key, stats_key
from pipeline.core.model_identity import ModelIdentity
from pipeline.core.redis_clients import RedisClient, connect
from pipeline.ops.embedded_redis import EmbeddedRedis
from pipeline.results.record import ResultRecord
from pipeline.results.writer import ResultWriter

STAGES = ("encode", "publish", "read", "decode", "result write + ack")


@dataclass(frozen=True)
class StageCost:
    """One step's CPU per frame: in the process that runs it, and in Redis."""

    encoding: Encoding
    stage: str
    frames: int
    client_us: float
    redis_us: float

    @property
    def total_us(self) -> float:
        return self.client_us + self.redis_us

    def cores_at(self, fps: float) -> float:
        """Cores this step needs at ``fps`` frames/s."""
        return self.total_us * fps / 1e6


def _redis_cpu_s(client: RedisClient) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _measure(client: RedisClient, encoding: Encoding, stage: str, frames: int, work: Callable[[], Any]) -> StageCost:
    redis0, cpu0 = _redis_cpu_s(client), time.process_time()
    work()
    cpu1, redis1 = time.process_time(), _redis_cpu_s(client)
    return StageCost(encoding, stage, frames, (cpu1 - cpu0) / frames * 1e6, max(0.0, redis1 - redis0) / frames * 1e6)


def _records(deliveries: list[Delivery], batch: int) -> list[tuple[Delivery, list[ResultRecord]]]:
    """Results the size the model's are (top 5 and a scene), one per delivery."""
    labels = [Label(i, f"class {i}", 0.9 / (i + 1)) for i in range(5)]
    result = FrameClassification(top_k=labels, scene=Label(0, "animals", 0.8))
    now, model = time.time(), ModelIdentity("mobilenetv2", "bench")
    return [(d, [ResultRecord.build(stream=d.stream_id, zone=FULL_ZONE, seq=i, frame_id=d.entry_id, capture_ts=now,
                                    inference_ts=now, picked_ts=now, model=model, result=result, inference_ms=1.0,
                                    batch_size=batch, replica="bench")]) for i, d in enumerate(deliveries)]


def _one_encoding(url: str, frames: np.ndarray, encoding: Encoding, *, count: int, batch: int,
                  cameras: int) -> list[StageCost]:
    ids = [f"bench-{encoding}-{i}" for i in range(cameras)]
    messages = [FrameMessage.whole(stream_id=ids[i % cameras], seq=i, capture_ts_ns=time.time_ns(),
                             pixels=frames[i % len(frames)]) for i in range(count)]
    client = connect(url, 5.0)
    bus_opts = BusOptions(layout=BusLayout([url]), maxlen=count + 1000, encoding=encoding, jpeg_quality=90,
                          socket_timeout_s=5.0, backoff_base_s=0.5, backoff_cap_s=2.0)
    consumer_opts = ConsumerOptions(layout=BusLayout([url]), consumer_name="bench", stream_ids=ids, max_deliveries=3,
                                    claim_idle_s=600.0, deadletter_maxlen=1000, socket_timeout_s=5.0,
                                    max_frame_age_ms=3_600_000, discover=False)
    try:
        client.delete(*map(frames_key, ids), *map(stats_key, ids))
        out = [_measure(client, encoding, "encode", count, lambda: [encode_frame(m, encoding) for m in messages])]
        with FrameBus(bus_opts) as bus, FrameConsumer(consumer_opts) as consumer:
            out.append(_measure(client, encoding, "publish", count, lambda: [bus.publish(m) for m in messages]))
            read: list[Delivery] = []

            def read_all() -> None:
                while len(read) < count:
                    got = consumer.read_batch(batch, window_s=0.0, idle_block_s=0.1)
                    if not got:
                        raise RuntimeError(f"read {len(read)} of {count} frames, then none came")
                    read.extend(got)

            out.append(_measure(client, encoding, "read", count, read_all))
            out.append(_measure(client, encoding, "decode", count, lambda: [decode_frame(d.fields) for d in read]))
            writer = ResultWriter(consumer.clients, results_maxlen=count + 1000)
            done = _records(read, batch)

            def write_all() -> None:
                for i in range(0, count, batch):
                    writer.write(done[i:i + batch])

            out.append(_measure(client, encoding, "result write + ack", count, write_all))
        return out
    finally:
        client.close()


def bench_stages(frames: np.ndarray, *, encodings: tuple[Encoding, ...] = ("raw", "jpeg"), count: int = 2000,
                 batch: int = 64, cameras: int = 4, redis_url: str | None = None) -> list[StageCost]:
    """Every step's CPU per frame for each frame encoding, ``count`` frames each (see the module's docstring)."""
    if redis_url is not None:
        return [c for e in encodings for c in _one_encoding(redis_url, frames, e, count=count, batch=batch,
                                                               cameras=cameras)]
    room_mb = int(count * frames[0].nbytes * 2 / 2**20) + 256  # every frame of a step is in Redis at once
    with EmbeddedRedis(maxmemory_mb=max(1024, room_mb)) as redis:
        return [c for e in encodings for c in _one_encoding(redis.url, frames, e, count=count, batch=batch,
                                                               cameras=cameras)]
