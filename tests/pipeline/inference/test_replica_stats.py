"""Replica batch statistics on a real Redis: summed in memory, flushed exactly, kept across an outage."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from pipeline.core.bus_layout import BusLayout
from pipeline.core.keys import REPLICA_KEY_PREFIX
from pipeline.inference.replica_stats import ReplicaStatsRecorder
from tests.fixtures.services import RedisServer


def test_replica_stats_are_summed_then_flushed(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    key = REPLICA_KEY_PREFIX + "r1"
    rec = ReplicaStatsRecorder(BusLayout([clean_redis_url]), "r1", timeout_s=5, flush_every_s=3600)
    rec.batch_done(8, 0.02)
    rec.batch_done(4, 0.01)
    rec.batch_done(4, 0.2)
    assert client.hget(key, "frames") is None  # no Redis round trip per batch: summed until the next flush
    rec.close()  # flushes
    h = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
    assert (h["frames"], h["batches"], h["batch_sum"]) == ("16", "3", "16")
    assert (h["batch:8.0"], h["batch:4.0"]) == ("1", "2")
    assert (h["latency:0.025"], h["latency:0.01"], h["latency:0.25"]) == ("1", "1", "1")
    assert float(h["inference_seconds_sum"]) == pytest.approx(0.23)
    assert 0 < client.ttl(key) <= 120


@pytest.mark.parametrize("uptime_s", [0.0, 30.0, 7 * 24 * 3600.0])
def test_flushes_are_timed_from_start_whatever_the_uptime(clean_redis_url: str, uptime_s: float) -> None:
    # time.monotonic() is the machine's uptime: a recorder must behave the same on a machine booted a
    # minute ago and one up for a week.
    now = [uptime_s]
    client = redis.Redis.from_url(clean_redis_url)
    key = REPLICA_KEY_PREFIX + f"clock-{int(uptime_s)}"
    rec = ReplicaStatsRecorder(BusLayout([clean_redis_url]), key.removeprefix(REPLICA_KEY_PREFIX), timeout_s=5,
                               flush_every_s=10, clock=lambda: now[0])
    rec.batch_done(8, 0.01)
    now[0] += 9.9
    rec.batch_done(8, 0.01)
    assert client.hget(key, "frames") is None  # 9.9 s after start: not due yet
    now[0] += 0.2
    rec.batch_done(8, 0.01)  # 10.1 s after start: due, all three batches go at once
    assert client.hget(key, "frames") == b"24"
    now[0] += 5
    rec.batch_done(2, 0.01)
    assert client.hget(key, "frames") == b"24"  # 5 s after that flush: not due
    rec.close()
    assert client.hget(key, "frames") == b"26"


def test_counts_survive_a_redis_outage(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory()
    rec = ReplicaStatsRecorder(BusLayout([server.url()]), "r2", timeout_s=5, flush_every_s=0)
    rec.batch_done(8, 0.01)
    assert server.client().hget(REPLICA_KEY_PREFIX + "r2", "frames") == b"8"
    server.stop()
    rec.batch_done(5, 0.01)  # cannot be written now: kept for the next flush
    server.start()
    rec.close()
    # This server keeps nothing across a restart: what arrives is exactly the batch written during the outage.
    assert server.client().hget(REPLICA_KEY_PREFIX + "r2", "frames") == b"5"
