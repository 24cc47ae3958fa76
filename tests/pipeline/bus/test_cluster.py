"""The frame bus on a real Redis Cluster (three masters): every step of a frame (publish, fresh read, result,
dead letter, reclaim, discovery) runs in one slot per shard, and the counts add up."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import redis

from pipeline.bus.publisher import BusOptions, FrameBus
from pipeline.bus.reader import ConsumerOptions, FrameConsumer
from pipeline.bus.wire import FrameMessage
from pipeline.core.bus_layout import BusLayout
from pipeline.core.config import RedisConfig, VigilConfig
from pipeline.core.errors import BusError
from tests.fixtures.redis_cluster import RedisCluster3
from tests.pipeline.bus.test_reader import fake_record
from tests.pipeline.options import writer_for

CAMERAS = [f"cam-{i}" for i in range(8)]


def cluster_config(cluster: RedisCluster3, shards: int = 16) -> VigilConfig:
    return VigilConfig(redis=RedisConfig(urls=[cluster.url(1), cluster.url(0)], mode="cluster",
                                         cluster_shards=shards, socket_timeout_s=2.0))


def frame(stream_id: str, seq: int) -> FrameMessage:
    return FrameMessage.whole(stream_id=stream_id, seq=seq, capture_ts_ns=time.time_ns(),
                        pixels=np.full((8, 8, 3), seq, np.uint8))


def stats(cluster: RedisCluster3, layout: BusLayout, stream_id: str) -> dict[str, int]:
    client = layout.connect(2.0).client(0)
    try:
        return {k.decode(): int(v) for k, v in client.hgetall(layout.keys_of(stream_id).stats(stream_id)).items()}
    finally:
        client.close()


def test_frames_results_and_dead_letters_stay_in_one_slot_per_shard(redis_cluster: RedisCluster3) -> None:
    cfg = cluster_config(redis_cluster)
    layout = BusLayout.from_config(cfg.redis)
    layout.check_servers(2.0, must_answer=True)  # every node's version (all Redis 7 here)
    opts = replace(ConsumerOptions.from_config(cfg, "r1"), stream_ids=CAMERAS)
    with FrameConsumer(opts) as consumer:  # its groups first: the queue state counts what they have not read
        with FrameBus(BusOptions.from_config(cfg)) as bus:
            for seq in range(5):
                for stream_id in CAMERAS:
                    bus.publish(frame(stream_id, seq))
            assert {stream_id: q[0] for stream_id, q in bus.queue_state(CAMERAS).items()} == dict.fromkeys(CAMERAS, 5)
        got = []
        while len(got) < 5 * len(CAMERAS):
            batch = consumer.read_batch(64, window_s=0.05)
            assert batch, f"only {len(got)} frames read"
            got += batch
        poison, rest = got[0], got[1:]
        assert consumer.dead_letter(poison, "cannot decode")
        writer_for(consumer).write([(d, [fake_record(d)]) for d in rest])
    # Each camera's keys (and its shard's results) share one slot; the cameras spread over the masters.
    keys = redis_cluster.keys()
    assert all(k.startswith("vigil:{s") for k in keys if ":frames:" in k or ":stats:" in k or "results" in k), keys
    for stream_id in CAMERAS:
        names = layout.keys_of(stream_id)
        assert len({redis_cluster.node_of(k)
                    for k in (names.frames(stream_id), names.stats(stream_id), names.results)}) == 1
        s = stats(redis_cluster, layout, stream_id)
        assert s["published"] == 5 and s["inferred"] + s.get("dead_lettered", 0) == 5, (stream_id, s)
    assert len({redis_cluster.node_of(layout.keys_of(stream_id).frames(stream_id)) for stream_id in CAMERAS}) >= 2
    shard = layout.shard_of(poison.stream_id)
    client = layout.connect(2.0).client(shard)
    assert client.xlen(layout.shards[shard].keys.deadletter) == 1
    assert sum(client.xlen(s.keys.results) for s in layout.shards) == len(rest)
    assert sum(client.xlen(layout.keys_of(stream_id).frames(stream_id))
               for stream_id in CAMERAS) == 0  # acknowledged: gone
    client.close()


def test_pending_frames_are_reclaimed_and_new_streams_discovered(redis_cluster: RedisCluster3) -> None:
    cfg = cluster_config(redis_cluster, shards=4)
    opts = replace(ConsumerOptions.from_config(cfg, "r1"), stream_ids=CAMERAS[:2], claim_idle_s=0.2)
    with FrameBus(BusOptions.from_config(cfg)) as bus, FrameConsumer(opts) as crashed, \
            FrameConsumer(replace(opts, consumer_name="r2")) as live:
        for stream_id in CAMERAS[:2]:
            bus.publish(frame(stream_id, 0))
        taken = crashed.read_batch(10, window_s=0.05)
        assert len(taken) == 2  # then r1 "crashes": its frames stay pending
        time.sleep(0.3)
        claimed, dead = live.reclaim(10)
        assert sorted(d.stream_id for d in claimed) == CAMERAS[:2] and dead == 0
        assert all(d.deliveries == 2 for d in claimed)
        writer_for(live).write([(d, [fake_record(d)]) for d in claimed])
        bus.publish(frame("late-camera", 0))  # a camera this consumer was not told of
        live.discover(every_s=0)
        assert [d.stream_id for d in live.read_batch(10, window_s=0.05)] == ["late-camera"]
    layout = BusLayout.from_config(cfg.redis)
    assert all(stats(redis_cluster, layout, stream_id)["inferred"] == 1 for stream_id in CAMERAS[:2])


def test_a_cluster_that_is_away_fails_like_a_down_instance_and_names_no_password(
        redis_cluster: RedisCluster3) -> None:
    dead = redis.Redis(port=redis_cluster.nodes[0].port)  # a port with no server once the cluster is stopped
    cfg = cluster_config(redis_cluster)
    redis_cluster.__exit__()
    dead.close()
    with FrameBus(BusOptions.from_config(cfg)) as bus:  # starts: the cluster is asked on first use
        with pytest.raises(BusError) as err:
            bus.publish(frame("cam-0", 0))
        assert redis_cluster.password not in str(err.value)
        assert not bus.health()[bus.shard_index("cam-0")]["up"]
