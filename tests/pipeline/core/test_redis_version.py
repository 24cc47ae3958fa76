"""Which Redis servers the bus accepts: the version check on real servers (Redis 6.2 and 7, Valkey)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pipeline.bus.reader import FrameConsumer
from pipeline.core.bus_layout import BusLayout
from pipeline.core.errors import BusError, UnsupportedServerError
from pipeline.core.redis_version import ServerVersion
from pipeline.ops.embedded_redis import EmbeddedRedis, binary_version, find_redis_server
from tests.fixtures.services import RedisServer, free_port
from tests.pipeline.options import consumer_options


@pytest.mark.parametrize(("info", "name", "supported"), [
    ({"redis_version": "6.2.14"}, "Redis", False),
    ({"redis_version": "6.9.99"}, "Redis", False),
    ({"redis_version": "7.0.0"}, "Redis", True),
    ({"redis_version": "7.4.2"}, "Redis", True),
    ({"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "8.1.8"}, "Valkey", True),
    ({"redis_version": b"7.2.4", "server_name": b"valkey", "valkey_version": b"7.2.5"}, "Valkey", True),
])
def test_versions_from_info(info: dict[str, object], name: str, supported: bool) -> None:
    version = ServerVersion.from_info(info)
    assert (version.name, version.supported) == (name, supported)


def test_a_redis_6_2_is_refused_in_one_line(redis_factory: Callable[..., RedisServer], redis62_binary: str) -> None:
    old = redis_factory(password="s3cret-pw", binary=redis62_binary)
    with pytest.raises(UnsupportedServerError) as err:
        BusLayout([old.url()]).check_servers(2.0, must_answer=True)
    text = str(err.value)
    assert "\n" not in text and "s3cret-pw" not in text
    assert f"redis.urls[0] (redis://:***@127.0.0.1:{old.port}/0) is Redis 6.2.14" in text
    assert "Vigil needs Redis 7.0 or newer, or Valkey 7.2 or newer" in text
    assert "apt-get install redis-server" in text


def test_the_machine_s_redis_7_and_valkey_are_accepted(redis_server: RedisServer,
                                                      redis_factory: Callable[..., RedisServer],
                                                      valkey_binary: str) -> None:
    valkey = redis_factory(binary=valkey_binary)
    BusLayout([redis_server.url(), valkey.url()]).check_servers(2.0, must_answer=True)
    assert binary_version(valkey_binary).name == "Valkey"


def test_a_server_that_does_not_answer_is_checked_later_unless_it_must_answer() -> None:
    layout = BusLayout([f"redis://127.0.0.1:{free_port()}/0"])
    layout.check_servers(0.5, must_answer=False)  # a process may start before its Redis
    with pytest.raises(BusError, match=r"redis.urls\[0\]"):
        layout.check_servers(0.5, must_answer=True)


def test_a_replica_s_consumer_refuses_redis_6_2(redis_factory: Callable[..., RedisServer],
                                                 redis62_binary: str) -> None:
    old = redis_factory(binary=redis62_binary)
    with pytest.raises(UnsupportedServerError, match=r"is Redis 6\.2\.14"):
        FrameConsumer(consumer_options([old.url()], "replica-1", ["cam"])).__enter__()


def test_the_embedded_server_is_the_first_supported_one(redis62_binary: str, valkey_binary: str) -> None:
    assert find_redis_server([redis62_binary, valkey_binary]) == valkey_binary
    with pytest.raises(UnsupportedServerError, match=f"{redis62_binary} is Redis 6.2.14; Vigil needs"):
        find_redis_server([redis62_binary])
    with pytest.raises(BusError, match="no redis-server to start one: apt-get install redis-server"):
        find_redis_server([])


def test_the_embedded_server_runs_the_bundled_valkey(valkey_binary: str) -> None:
    with EmbeddedRedis(binary=valkey_binary) as server:
        BusLayout([server.url]).check_servers(2.0, must_answer=True)
