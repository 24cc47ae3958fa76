"""The bus layout (pure logic): shards, their key names, pinning, and the cluster's config checks."""

from __future__ import annotations

import pytest

from pipeline.core.bus_layout import BusLayout
from pipeline.core.config import validate_config
from pipeline.core.errors import BusError, ConfigError
from pipeline.core.keys import RESULTS_KEY, STANDALONE, KeySpace, frames_key
from pipeline.core.redis_clients import connect_cluster

CAMERAS = [f"cam-{i}" for i in range(200)]


def test_standalone_instances_keep_todays_key_names() -> None:
    layout = BusLayout(["redis://:Pw-1@10.0.0.1:6379/0", "redis://10.0.0.2:6379/0"])
    assert not layout.is_cluster and len(layout) == 2
    assert all(s.keys == STANDALONE for s in layout.shards)
    assert layout.keys_of("cam-1").frames("cam-1") == frames_key("cam-1") == "vigil:frames:cam-1"
    assert layout.keys_of("cam-1").results == RESULTS_KEY == "vigil:results"
    assert layout.shards[0].where == "redis://:***@10.0.0.1:6379/0"
    assert layout.frames_key_at(1, b"vigil:frames:cam-9") == (1, "cam-9")
    assert layout.describe() == "2 redis instance(s)"


def test_a_clusters_shards_each_have_one_hash_tag_for_all_their_keys() -> None:
    layout = BusLayout(["redis://:Pw-1@10.0.0.1:7000/0"], cluster_shards=16)
    assert layout.is_cluster and len(layout) == 16
    shard = layout.shards[3]
    assert shard.keys == KeySpace.cluster_shard(3) and shard.identity == "cluster/s3"
    names = [shard.keys.frames("c"), shard.keys.stats("c"), shard.keys.results, shard.keys.deadletter,
             shard.keys.failures, shard.keys.stream_store, shard.keys.stream_store_version]
    assert all(n.startswith("vigil:{s3}:") for n in names), names
    assert shard.keys.camera_of_frames(b"vigil:{s3}:frames:lobby:east") == "lobby:east"
    with pytest.raises(ValueError, match="not a frames stream key"):
        shard.keys.camera_of_frames("vigil:frames:lobby")
    assert "Pw-1" not in shard.where and "shard 3" in shard.where
    assert layout.frames_key_at(0, "vigil:{s12}:frames:cam-1") == (12, "cam-1")
    assert layout.frames_key_at(0, "vigil:{s99}:frames:cam-1") is None  # cluster_shards was lowered


def test_cameras_spread_over_the_shards_and_adding_shards_moves_few() -> None:
    sixteen, seventeen = BusLayout(["redis://h:7000"], 16), BusLayout(["redis://other-seed:7001"], 17)
    placed = [sixteen.shard_of(c) for c in CAMERAS]
    assert len(set(placed)) == 16 and max(placed.count(i) for i in range(16)) < 3 * len(CAMERAS) / 16
    # The seeds are not part of a shard's identity; one more shard takes about 1/17 of the cameras.
    moved = sum(a != seventeen.shard_of(c) for a, c in zip(placed, CAMERAS, strict=True))
    assert 0 < moved < len(CAMERAS) / 8
    assert all(seventeen.shard_of(c) == 16 for a, c in zip(placed, CAMERAS, strict=True)
               if a != seventeen.shard_of(c))


def test_cluster_mode_takes_plain_node_urls_only() -> None:
    cfg = validate_config({"redis": {"mode": "cluster", "urls": ["redis://:Pw@10.0.0.1:7000"]}}, environ={})
    assert cfg.redis.cluster_shards == 16 and BusLayout.from_config(cfg.redis).is_cluster
    with pytest.raises(ConfigError) as err:
        validate_config({"redis": {"mode": "cluster", "urls": ["redis+sentinel://:Pw-Secret@s:26379/bus"]}},
                        environ={})
    assert "every URL is a node of the cluster" in str(err.value) and "Pw-Secret" not in str(err.value)
    with pytest.raises(BusError, match="database 0 only"):
        connect_cluster(["redis://:Pw@10.0.0.1:7000/2"], 1.0)
