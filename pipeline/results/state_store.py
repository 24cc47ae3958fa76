"""Where a sink keeps its classifiers' states: the hash ``vigil:states:<sink>`` on the first bus instance.

One field per camera, zone and classifier (``camera/zone/classifier``), its JSON
(:class:`pipeline.results.classifier_states.ZoneState`), written after each batch the sink took and before
the batch is acknowledged, so a restarted sink worker goes on from the states it had, with their since-when.
"""

from __future__ import annotations

from collections.abc import Mapping

from redis.typing import EncodableT, FieldT

from pipeline.core.redis_clients import RedisClient
from pipeline.core.redis_errors import redis_errors


class RedisStateStore:
    """A :class:`~pipeline.results.classifier_states.StateStore` in one Redis hash (``where``: its redacted URL)."""

    def __init__(self, client: RedisClient, key: str, where: str) -> None:
        self._client, self._key, self._where = client, key, where

    def load(self) -> dict[str, str]:
        with redis_errors(f"reading the classifier states (HGETALL {self._key})", self._where):
            raw = self._client.hgetall(self._key)
        return {k.decode(): v.decode() for k, v in raw.items()}

    def save(self, states: Mapping[str, str]) -> None:
        if not states:
            return
        with redis_errors(f"saving the classifier states (HSET {self._key})", self._where):
            # A copy typed as HSET takes it (redis-py's mapping is invariant: a dict[str, str] is not one).
            mapping: dict[FieldT, EncodableT] = {k: v for k, v in states.items()}
            self._client.hset(self._key, mapping=mapping)
