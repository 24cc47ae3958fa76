"""The console's follower of the results stream, on a real Redis: read back, then followed as it grows."""

from __future__ import annotations

import time

import redis

from pipeline.console.tail import RESULTS_KEPT, ResultsTail
from pipeline.core.bus_layout import BusLayout
from pipeline.core.keys import RESULTS_KEY
from pipeline.results.camera_event import StateEvent
from tests.fixtures.services import RedisServer, wait_for
from tests.pipeline.results.sinks.records import record


def test_reads_back_then_follows_and_keeps_each_camera_bounded(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    for i in range(5):
        client.xadd(RESULTS_KEY, record("cam", "cat", i=i).to_fields())  # type: ignore[arg-type]
    with ResultsTail(BusLayout([clean_redis_url]).connect(5), hysteresis=2, keep_s=3) as tail:
        assert len(tail.camera("cam").results) == 5  # read back at start
        assert [e["to"] for e in tail.camera("cam").changes if e["event"] == "label_changed"] == ["cat"]
        client.xadd(RESULTS_KEY, StateEvent("cam", "stalled", "no frame for 5.0 s", 1006.0).to_fields())  # type: ignore[arg-type]
        for i in range(6, 6 + RESULTS_KEPT + 10):
            r = record("cam", "dog", i=i)
            client.xadd(RESULTS_KEY, r.to_fields())  # type: ignore[arg-type]
        assert wait_for(lambda: tail.camera("cam").results[-1].seq == 5 + RESULTS_KEPT + 10, 5)
        kept = tail.camera("cam")
        assert len(kept.results) == RESULTS_KEPT  # bounded
        # Only the last keep_s (3 s; results are 1 s apart) of changes: cat (at 1001) is gone, the stall (1006)
        # and dog (1007) are kept.
        assert [(e["event"], e.get("to", e.get("state"))) for e in kept.changes] == [
            ("state_changed", "stalled"), ("label_changed", "dog")]
        assert kept.changes[-1]["time"] == "1970-01-01T00:16:47.000Z"
        assert not tail.camera("other").results


def test_every_result_is_seen_when_the_streams_start_empty(redis_server: RedisServer) -> None:
    """Many shards read in turn, each with a short block: a tail that followed an empty stream from "$" saw only
    what arrived while it blocked on that shard, so on a Redis Cluster (16 shards) a camera's results were missed
    until one happened to arrive then (the console showed no label)."""
    urls = [redis_server.url(db=db) for db in range(1, 16) if db != 9]  # 14 shards; db 9 is clean_redis_url's
    for url in urls:
        redis.Redis.from_url(url).delete(RESULTS_KEY)
    quiet = redis.Redis.from_url(urls[5])
    clients = BusLayout(urls).connect(5)
    try:
        with ResultsTail(clients, hysteresis=1) as tail:
            for i in range(10):  # one camera on one shard, a result every 50 ms
                quiet.xadd(RESULTS_KEY, record("cam", "cat", i=i).to_fields())  # type: ignore[arg-type]
                time.sleep(0.05)
            assert wait_for(lambda: len(tail.camera("cam").results) == 10, 5), len(tail.camera("cam").results)
    finally:
        clients.close()
