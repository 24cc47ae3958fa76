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


@pytest.mark.parametrize("own_clients", [False, True], ids=["new-connection", "caller-s-clients"])
def test_a_redis_6_2_is_refused_in_one_line(redis_factory: Callable[..., RedisServer], redis62_binary: str,
                                            own_clients: bool) -> None:
    old = redis_factory(password="s3cret-pw", binary=redis62_binary)
    layout = BusLayout([old.url()])
    clients = layout.connect(2.0) if own_clients else None
    with pytest.raises(UnsupportedServerError) as err:
        layout.check_servers(2.0, must_answer=True, clients=clients)
    if clients is not None:
        clients.close()
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


@pytest.mark.parametrize("own_clients", [False, True], ids=["new-connection", "caller-s-clients"])
def test_a_server_that_does_not_answer_is_checked_later_unless_it_must_answer(own_clients: bool) -> None:
    port = free_port()
    layout = BusLayout([f"redis://127.0.0.1:{port}/0"])
    clients = layout.connect(0.5, fail_fast=True) if own_clients else None
    layout.check_servers(0.5, must_answer=False, clients=clients)  # a process may start before its Redis
    with pytest.raises(BusError) as err:
        layout.check_servers(0.5, must_answer=True, clients=clients)
    assert str(err.value).startswith(f"Redis redis://127.0.0.1:{port}/0 (redis.urls[0]) is unavailable: "
                                     "INFO server failed: ConnectionError: "), str(err.value)
    if clients is not None:
        clients.close()


def test_the_callers_clients_are_asked_on_their_own_connection(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory()
    layout = BusLayout([server.url()])
    clients = layout.connect(2.0)

    def connections() -> int:  # every connection the server ever accepted
        return int(clients.client(0).info("stats")["total_connections_received"])

    try:
        before = connections()
        layout.check_servers(2.0, must_answer=True, clients=clients)
        assert connections() == before  # no new connection, and the caller's is still open
        layout.check_servers(2.0, must_answer=True)
        assert connections() == before + 1  # without them: one of its own (closed after)
    finally:
        clients.close()


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
