"""A Redis at its maxmemory: reported full (not down), new frames counted as refused, and recovery by itself."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from pipeline.bus.publisher import FrameBus
from pipeline.bus.wire import FrameMessage
from pipeline.core.errors import BusFullError
from pipeline.core.keys import frames_key, stats_key
from tests.fixtures.services import RedisServer
from tests.pipeline.bus.test_publisher import bus_options
from tests.pipeline.bus.test_reader import consumer, fake_record
from tests.pipeline.options import writer_for

FRAME = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)


def fill(bus: FrameBus, stream_id: str, limit: int = 400) -> int:
    """Publish until the Redis refuses a frame; return how many it took."""
    for seq in range(limit):
        try:
            bus.publish(FrameMessage.whole(stream_id, seq, time.time_ns(), FRAME))
        except BusFullError:
            return seq
    raise AssertionError(f"Redis took {limit} frames without reaching its maxmemory")


def test_a_full_redis_is_reported_full_and_recovers_by_itself(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory(extra_args=["--maxmemory", "12mb", "--maxmemory-policy", "noeviction"])
    with FrameBus(bus_options([server.url()], maxlen=1000)) as bus, \
            consumer(server.url(), "r1", ["cam"]) as c:
        taken = fill(bus, "cam")
        assert 10 < taken < 100
        [health] = bus.health()
        assert health["up"] and health["full"] and "maxmemory" in health["last_error"]  # full, not down
        # Inference goes on at maxmemory (its scripts may write) and frees the memory as it goes.
        while batch := c.read_batch(16, window_s=0.01, idle_block_s=0.05):
            writer_for(c).write([(d, [fake_record(d)]) for d in batch])
        assert int(server.client().hget(stats_key("cam"), "inferred") or 0) == taken
        assert server.client().xlen(frames_key("cam")) == 0
        bus.publish(FrameMessage.whole("cam", taken, time.time_ns(), FRAME))  # room again, without any restart
        [health] = bus.health()
        assert health["up"] and not health["full"] and health["last_error"] == ""


def test_queues_that_cannot_fit_maxmemory_are_named_at_start(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory(extra_args=["--maxmemory", "64mb"])
    roomy = redis_factory()  # no maxmemory: nothing to compare
    with FrameBus(bus_options([server.url()], maxlen=500)) as bus:
        [warning] = bus.capacity_warnings(dict.fromkeys(["a", "b", "c", "d"], 224 * 224 * 3))
    assert "4 camera(s) x redis.maxlen 500 x 147 KB a frame = 287 MB" in warning
    assert "set redis.maxlen to 89 or less, or raise its maxmemory to 359 MB" in warning
    with FrameBus(bus_options([roomy.url()], maxlen=500)) as bus:
        assert bus.capacity_warnings(dict.fromkeys(["a", "b", "c", "d"], 224 * 224 * 3)) == []
