"""The one mapping of redis-py's errors to Vigil's, at every Redis boundary."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import ClusterDownError

from pipeline.core.errors import BusError, BusFullError, BusUnavailableError
from pipeline.core.redis_errors import redis_errors


@pytest.mark.parametrize(("raised", "expected", "words"), [
    (redis.ConnectionError("refused"), BusUnavailableError, "is unavailable: XADD failed: ConnectionError"),
    (redis.TimeoutError("Timeout reading"), BusUnavailableError, "is unavailable: XADD failed: TimeoutError"),
    (ClusterDownError("CLUSTERDOWN"), BusUnavailableError, "is unavailable"),
    (redis.OutOfMemoryError("OOM command not allowed"), BusFullError, "is full (maxmemory): XADD refused"),
    (redis.ResponseError("WRONGTYPE Operation"), BusError, "XADD failed: ResponseError: WRONGTYPE"),
])
def test_each_redis_error_maps_to_one_bus_error_naming_command_and_server(
        raised: Exception, expected: type[BusError], words: str) -> None:
    with pytest.raises(expected) as err, redis_errors("XADD", "redis://:***@db:6379/0"):
        raise raised
    assert type(err.value) is expected and words in str(err.value)
    assert str(err.value).startswith("Redis redis://:***@db:6379/0") and err.value.__cause__ is raised


def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError), redis_errors("GET"):
        raise KeyError("not Redis")
