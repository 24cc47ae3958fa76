"""Overload on a real Redis: stale frames are dropped and counted, classified frames leave Redis."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import redis

from pipeline.bus.wire import FrameMessage, encode_frame
from pipeline.core.keys import INFERENCE_GROUP, frames_key, stats_key
from tests.pipeline.bus.test_reader import consumer, fake_record, publish
from tests.pipeline.options import writer_for


def stats(client: redis.Redis, stream_id: str) -> dict[str, int]:
    raw: dict[bytes, bytes] = client.hgetall(stats_key(stream_id))  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}


def evicted(client: redis.Redis, stream_id: str) -> int:
    """Entries trimmed off a stream (XADD MAXLEN, as these tests publish) before the group read them: trimmed
    ``entries-added - length``, less the ``entries-read`` the group saw."""
    key = frames_key(stream_id)
    info: dict[str, Any] = client.xinfo_stream(key)  # type: ignore[assignment]
    read = max((int(g.get("entries-read") or 0) for g in client.xinfo_groups(key)), default=0)  # type: ignore[union-attr]
    return max(0, int(info["entries-added"]) - int(info["length"]) - read)


def test_a_backlog_older_than_the_max_age_is_dropped_stale_and_counted(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    with consumer(clean_redis_url, "r1", ["cam"], max_frame_age_ms=250) as c:
        publish(client, "cam", 20)  # a backlog nobody read in time...
        time.sleep(0.4)
        fresh = publish(client, "cam", 5, start=20)  # ...and the camera's newest frames
        batch = c.read_batch(32, window_s=0.05)
        assert [d.entry_id for d in batch] == fresh  # only the fresh ones reach the model
        assert c.stale_dropped == 20 and stats(client, "cam")["dropped_stale"] == 20
        assert client.xpending(frames_key("cam"), INFERENCE_GROUP)["pending"] == 5  # stale ones are not pending
        writer_for(c).write([(d, [fake_record(d)]) for d in batch])
    published = int(client.xinfo_stream(frames_key("cam"))["entries-added"])  # type: ignore[index]
    s = stats(client, "cam")
    assert published == s["inferred"] + s["dropped_stale"] + evicted(client, "cam") == 25  # the identity, exact
    assert client.xlen(frames_key("cam")) == 0  # nothing classified or dropped stays in Redis


def test_fresh_frames_are_never_dropped(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    ids = publish(client, "cam", 40)
    with consumer(clean_redis_url, "r1", ["cam"], max_frame_age_ms=60_000) as c:
        got = [d.entry_id for _ in range(3) for d in c.read_batch(16, window_s=0.05)]
    assert got == ids and "dropped_stale" not in stats(client, "cam")


def test_acknowledged_frames_leave_redis_and_pending_ones_stay(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    key = frames_key("cam")
    ids = publish(client, "cam", 8)
    with consumer(clean_redis_url, "doomed", ["cam"]) as dead:
        assert len(dead.read_batch(4, window_s=0.05)) == 4  # it "crashes" with these pending
    with consumer(clean_redis_url, "survivor", ["cam"], claim_idle_s=0.05) as c:
        later = c.read_batch(4, window_s=0.05)
        writer_for(c).write([(d, [fake_record(d)]) for d in later])
        # Acknowledged, but behind the crashed replica's pending frames: kept until those are done.
        assert [e.decode() for e, _ in client.xrange(key)] == ids
        time.sleep(0.1)
        claimed, _ = c.reclaim(10)
        writer_for(c).write([(d, [fake_record(d)]) for d in claimed])
    assert client.xlen(key) == 0
    publish(client, "cam", 30, start=8, maxlen=10)  # nobody reads: MAXLEN ~ 10 evicts the older ones
    # Every one of the 30 not in the stream was evicted unread: trimming acknowledged frames kept the count exact.
    assert evicted(client, "cam") == 30 - client.xlen(key) >= 10


def test_redis_holds_only_frames_in_flight(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    px = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    with consumer(clean_redis_url, "r1", ["cam"]) as c:
        baseline = int(client.info("memory")["used_memory"])  # type: ignore[index]
        for i in range(100):
            client.xadd(frames_key("cam"), encode_frame(FrameMessage.whole("cam", i, time.time_ns(), px)))  # type: ignore[arg-type]
        queued = int(client.info("memory")["used_memory"])  # type: ignore[index]
        assert queued - baseline > 100 * 224 * 224 * 3  # 100 raw frames in Redis
        while batch := c.read_batch(32, window_s=0.01, idle_block_s=0.05):
            writer_for(c).write([(d, [fake_record(d)]) for d in batch])
        after = int(client.info("memory")["used_memory"])  # type: ignore[index]
    assert stats(client, "cam")["inferred"] == 100
    assert after - baseline < 2 * 1024 * 1024, (baseline, queued, after)  # the results, not the frames
