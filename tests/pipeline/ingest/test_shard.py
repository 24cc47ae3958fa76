"""Which ingest worker owns which camera."""

from __future__ import annotations

import pytest

from pipeline.core.config import validate_config
from pipeline.core.errors import ConfigError
from pipeline.ingest.shard import ordinal_from_hostname, owned_streams, parse_shard, shard_of


def test_shards_split_cameras_deterministically() -> None:
    ids = [f"cam-{i}" for i in range(200)]
    for n in (1, 2, 3, 5):
        owners = [[i for i in range(n) if shard_of(c, n) == i] for c in ids]
        assert all(len(o) == 1 for o in owners)  # exactly one owner each
        if n > 1:
            assert min(sum(1 for o in owners if o == [i]) for i in range(n)) > 200 / n / 2
    cfg = validate_config({"streams": [{"id": c, "url": "/x.mp4"} for c in ids[:20]]})
    parts = [{s.id for s in owned_streams(cfg, (i, 3))} for i in range(3)]
    assert set().union(*parts) == set(ids[:20]) and sum(map(len, parts)) == 20
    # Pinned values: the split must not change between processes or releases (Python's hash() is salted).
    assert [shard_of(f"cam-{i}", 4) for i in range(8)] == [0, 0, 1, 1, 2, 1, 1, 2]


def test_parse_shard_and_statefulset_ordinal() -> None:
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard("auto/8", hostname="vigil-ingest-5") == (5, 8)
    assert ordinal_from_hostname("vigil-ingest-12.vigil.svc.cluster.local") == 12
    for bad in ("4/4", "x/2", "1/0", "auto/3"):
        with pytest.raises(ConfigError):
            parse_shard(bad, hostname="no-ordinal")
