"""The redis sink's errors on a real Redis: refused for good (ACL, wrong type) or retried (Redis away)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import redis

from pipeline.core.bus_layout import BusLayout
from pipeline.core.config import RedisSinkConfig
from pipeline.core.errors import SinkError, SinkRejectedError
from pipeline.core.keys import RESULTS_KEY, STANDALONE
from pipeline.results.delivery import SinkRunner
from pipeline.results.sinks.redis_stream import RedisStreamSink
from tests.fixtures.services import RedisServer, wait_for
from tests.pipeline.results.sinks.records import record

PASSWORD = "limited-pw-9"


def _limited(redis_factory: Callable[..., RedisServer]) -> tuple[RedisServer, str]:
    """A Redis with an admin and a user that may only touch keys ``allowed:*`` (a real ACL)."""
    server = redis_factory(password="admin-pw", user="admin",
                           extra_args=["--user", "limited", "on", f">{PASSWORD}", "~allowed:*", "+@all"])
    return server, f"redis://limited:{PASSWORD}@127.0.0.1:{server.port}/0"


def test_a_user_without_permission_on_the_stream_is_refused_for_good(
        redis_factory: Callable[..., RedisServer]) -> None:
    _, url = _limited(redis_factory)
    cfg = RedisSinkConfig(type="redis", url=url, stream="vigil:results:out")
    with RedisStreamSink(cfg, None) as sink, pytest.raises(SinkRejectedError, match="NoPermissionError") as err:
        sink.write([record("cam", "cat")])
    assert not err.value.split and err.value.status is None and PASSWORD not in str(err.value)


def test_a_key_of_another_type_is_refused_for_good(redis_factory: Callable[..., RedisServer]) -> None:
    _, url = _limited(redis_factory)
    redis.Redis.from_url(url).set("allowed:out", "a string, not a stream")
    with RedisStreamSink(RedisSinkConfig(type="redis", url=url, stream="allowed:out"), None) as sink:
        with pytest.raises(SinkRejectedError, match="WRONGTYPE"):
            sink.write([record("cam", "cat")])
        redis.Redis.from_url(url).delete("allowed:out")
        sink.write([record("cam", "cat")])  # the same sink writes once the key is a stream again
    assert redis.Redis.from_url(url).xlen("allowed:out") == 1


def test_redis_away_is_retried_not_refused(redis_factory: Callable[..., RedisServer]) -> None:
    server, url = _limited(redis_factory)
    with RedisStreamSink(RedisSinkConfig(type="redis", url=url, stream="allowed:out", timeout_s=1), None) as sink:
        server.stop()
        with pytest.raises(SinkError) as err:
            sink.write([record("cam", "cat")])
    assert not isinstance(err.value, SinkRejectedError)


def test_runner_dead_letters_what_the_redis_sink_may_not_write(
        clean_redis_url: str, redis_factory: Callable[..., RedisServer]) -> None:
    _, url = _limited(redis_factory)
    bus = redis.Redis.from_url(clean_redis_url)
    for i in range(6):
        bus.xadd(RESULTS_KEY, record("cam", "cat", i=i).to_fields())  # type: ignore[arg-type]
    cfg = RedisSinkConfig(type="redis", url=url, stream="vigil:results:out", batch_size=4)
    clients = BusLayout([clean_redis_url]).connect(2.0)
    stop = threading.Event()
    with RedisStreamSink(cfg, None) as sink:
        runner = SinkRunner("copy", sink, cfg, clients, consumer="t")
        runner.start(stop)
        try:
            assert wait_for(lambda: bus.xlen(STANDALONE.results_deadletter) == 6, 10)
        finally:
            stop.set()
            runner.join(5)
    clients.close()
    dead = [fields for _, fields in bus.xrange(STANDALONE.results_deadletter)]
    assert [d[b"status"] for d in dead] == [b""] * 6 and all(b"NOPERM" in d[b"reason"] or b"permission"
                                                              in d[b"reason"] for d in dead)
    assert runner.rejected == 6 and runner.delivered == 0
    assert bus.xpending(RESULTS_KEY, "vigil-sink-copy")["pending"] == 0
