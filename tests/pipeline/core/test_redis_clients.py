"""Redis URLs: Sentinel addresses parsed, checked, pinned by service, and never shown with their passwords."""

from __future__ import annotations

import pytest

from pipeline.core.config import validate_config
from pipeline.core.errors import BusError, ConfigError
from pipeline.core.redis_clients import SentinelAddress, pick_shard, shard_identity

URL = "redis+sentinel://:Primary-Pw@10.0.0.1:26379,10.0.0.2:26380/bus/3?sentinel_password=Sentinel-Pw"


def test_sentinel_url_is_parsed() -> None:
    address = SentinelAddress.parse(URL)
    assert address.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (address.service, address.db, address.username) == ("bus", 3, None)
    assert (address.password, address.sentinel_password) == ("Primary-Pw", "Sentinel-Pw")
    assert SentinelAddress.parse("redis+sentinel://s1:26379/bus").db == 0


def test_a_sentinel_primary_is_pinned_by_its_service_whatever_the_sentinels() -> None:
    other_hosts = "redis+sentinel://:New-Pw@10.0.0.9:26379/bus/3"
    assert shard_identity(URL) == shard_identity(other_hosts) == "sentinel:bus/3"
    idents = [shard_identity(URL), shard_identity("redis://10.0.0.5:6379/0")]
    assert pick_shard("cam-1", idents) == pick_shard("cam-1", list(idents))


@pytest.mark.parametrize(("url", "problem"), [
    ("redis+sentinel://10.0.0.1:26379", "the path must be /SERVICE"),
    ("redis+sentinel://10.0.0.1/bus", "'10.0.0.1' is not HOST:PORT"),
    ("redis+sentinel://:Pw-Secret@10.0.0.1:26379/bus/x", "the path must be /SERVICE"),
])
def test_bad_sentinel_urls_say_what_and_how(url: str, problem: str) -> None:
    with pytest.raises(BusError) as err:
        SentinelAddress.parse(url)
    assert problem in str(err.value) and "redis+sentinel://[:PASSWORD@]HOST:26379" in str(err.value)
    assert "Pw-Secret" not in str(err.value)
    with pytest.raises(ConfigError) as cfg_err:  # the config check says it too, at its key
        validate_config({"redis": {"urls": [url]}}, environ={})
    assert "redis.urls" in str(cfg_err.value) and problem in str(cfg_err.value)
    assert "Pw-Secret" not in str(cfg_err.value)


def test_a_valid_sentinel_url_passes_the_config_check() -> None:
    assert validate_config({"redis": {"urls": [URL]}}, environ={}).redis.urls == [URL]
