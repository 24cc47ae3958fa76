"""Copy result records to another Redis stream (e.g. for a downstream service).

A refusal no retry fixes while the target stays as it is, a user without permission on the stream
(``NOPERM``) or a key of another type (``WRONGTYPE``), raises
:class:`~pipeline.core.errors.SinkRejectedError` (the batch goes to the results dead-letter); a lost
connection, a timeout, a full Redis (``OOM``) or a replica that is read-only during a failover are
retried.
"""

from __future__ import annotations

from types import TracebackType

import redis

from pipeline.core.config import RedisSinkConfig
from pipeline.core.errors import ConfigError, SinkError, SinkRejectedError
from pipeline.core.redis_clients import RedisClient, connect
from pipeline.results.record import ResultRecord


class RedisStreamSink:
    def __init__(self, cfg: RedisSinkConfig, default_url: str | None) -> None:
        url = cfg.url or default_url
        if not url:
            raise ConfigError("a redis sink needs url: (it defaults to the first of redis.urls, except with "
                              "redis.mode: cluster: name a standalone Redis for the copy)")
        self.cfg, self.url = cfg, url
        self._client: RedisClient | None = None

    def __enter__(self) -> RedisStreamSink:
        self._client = connect(self.url, self.cfg.timeout_s)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._client is not None:
            self._client.close()

    def write(self, records: list[ResultRecord]) -> None:
        if self._client is None:
            raise SinkError("redis sink is not open")
        try:
            with self._client.pipeline(transaction=False) as p:
                for r in records:
                    # Copied into XADD's own type: a dict[str, str] is not redis-py's (invariant) dict of fields.
                    p.xadd(self.cfg.stream, {k: v for k, v in r.to_fields().items()}, maxlen=self.cfg.maxlen,
                           approximate=True)
                p.execute()
        except redis.RedisError as exc:
            detail = str(exc).rsplit("caused error: ", 1)[-1]  # a pipeline's error quotes the whole command
            message = f"redis sink {self.cfg.stream}: {type(exc).__name__}: {detail}"
            if isinstance(exc, redis.exceptions.NoPermissionError) or detail.startswith("WRONGTYPE"):
                raise SinkRejectedError(message, message, split=False) from exc
            raise SinkError(message) from exc
