"""Cameras added, changed and removed at runtime (the console's API), kept in Redis beside the YAML.

Runtime changes to the cameras are configuration, so the store lives beside :mod:`pipeline.core.config`
(which checks each stored camera as it checks the file's), below ingest, the console and the sinks that
read it.

Where: the hash ``vigil:streams`` on the first bus shard (``redis.urls[0]``; on a Redis Cluster,
``vigil:{s0}:streams``), one field per camera
id, each value one JSON change: ``{"set": {<stream>}}`` (the camera as the config's ``streams[]`` entry
would be, ``${VAR}`` unexpanded), ``{"update": {<keys>}}`` (keys of the YAML's camera of that id replaced,
e.g. its ``zones``: the YAML's URL, secrets and health stay where they are, never copied into Redis) or
``{"removed": true}``; and the counter ``vigil:streams:version``,
incremented in the same transaction (MULTI/EXEC), so a change is applied whole or not at all and
readers see that something changed.

How it combines with the YAML (:func:`effective_streams`): the YAML's ``streams:`` in their order, each
replaced by the store's ``set`` of the same id or with its ``update`` on top, without the ids the store
``removed``, then the
cameras only the store has, by id. The YAML file is never rewritten. Every ingest worker (every
shard) reads the store on start and again whenever the version changes (about every 2 s), so changes
reach the running workers and survive their restarts as long as Redis keeps its data (a Redis with
persistence; ``vigil run``'s embedded Redis lives as long as ``vigil run``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.core.config import StreamConfig, validate_config
from pipeline.core.errors import BusError, ConfigError
from pipeline.core.keys import STANDALONE, KeySpace
from pipeline.core.redis_clients import RedisClient
from pipeline.core.redis_errors import redis_errors

Changes = dict[str, dict[str, Any]]  # camera id -> {"set": {...}} or {"removed": True}


def validate_stream(doc: Any, environ: Mapping[str, str] | None = None) -> StreamConfig:
    """One ``streams[]`` entry, checked as the config checks it; ConfigError names the fields (``fps: ...``)."""
    try:
        cfg = validate_config({"streams": [doc]}, source="stream", environ=environ)
    except ConfigError as exc:
        problems = [p.removeprefix("streams[0].").removeprefix("streams[0]: ") for p in exc.problems]
        raise ConfigError("; ".join(problems), problems) from exc
    return cfg.streams[0]


def with_update(stream: StreamConfig, update: Mapping[str, Any],
                environ: Mapping[str, str] | None = None) -> StreamConfig:
    """``stream`` with the keys of ``update`` replaced, checked as the config checks a camera (its health, URL and
    everything not in ``update`` as they are)."""
    doc = {**stream.model_dump(mode="json", exclude_none=True), **update}
    return validate_stream(doc, environ)


def effective_streams(yaml_streams: list[StreamConfig], changes: Changes,
                      environ: Mapping[str, str] | None = None) -> tuple[list[StreamConfig], list[str]]:
    """The cameras to run: the YAML's, with the store's changes on top (see the module docstring); and a
    problem for each stored camera this process cannot use (an unset ``${VAR}`` here): the YAML's camera
    of that id, if any, runs instead."""
    problems: list[str] = []

    def stored(stream_id: str) -> StreamConfig | None:
        try:
            return validate_stream(changes[stream_id]["set"], environ)
        except ConfigError as exc:
            problems.append(f"camera {stream_id!r} from the camera store: {exc}")
            return None

    def updated(s: StreamConfig) -> StreamConfig:
        try:
            return with_update(s, changes[s.id]["update"], environ)
        except ConfigError as exc:
            problems.append(f"camera {s.id!r}'s change from the camera store: {exc}")
            return s

    out: list[StreamConfig] = []
    for s in yaml_streams:
        change = changes.get(s.id)
        if change is None:
            out.append(s)
        elif "set" in change:
            out.append(stored(s.id) or s)
        elif "update" in change:
            out.append(updated(s))
    yaml_ids = {s.id for s in yaml_streams}
    for stream_id in sorted(changes):
        if stream_id not in yaml_ids and "set" in changes[stream_id]:
            added = stored(stream_id)
            if added is not None:
                out.append(added)
    return out, problems


def camera_ids(yaml_streams: list[StreamConfig], store: StreamStore) -> Callable[[], dict[str, tuple[str, ...]]]:
    """A function that says which cameras there are now, each with its zone ids (the YAML's with the store's
    changes; the YAML's alone while Redis is away): what bounds the labels of metrics that cameras and zones
    added at runtime join. Iterating the answer gives the camera ids."""
    def ids() -> dict[str, tuple[str, ...]]:
        try:
            streams = effective_streams(yaml_streams, store.changes())[0]
        except BusError:
            streams = yaml_streams
        return {s.id: s.zone_ids for s in streams}
    return ids


class StreamStore:
    """The store on the first bus instance (``client``; ``where``: its redacted URL, for errors)."""

    def __init__(self, client: RedisClient, keys: KeySpace = STANDALONE, where: str = "") -> None:
        self.client, self.where = client, where
        self._key, self._version_key = keys.stream_store, keys.stream_store_version

    def version(self) -> int:
        with redis_errors("reading the camera store (GET)", self.where):
            return int(self.client.get(self._version_key) or 0)

    def changes(self) -> Changes:
        with redis_errors("reading the camera store (HGETALL)", self.where):
            raw = self.client.hgetall(self._key)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def put(self, stream_id: str, change: dict[str, Any]) -> None:
        """Record one change and bump the version, in one transaction (nothing is changed when it fails)."""
        with redis_errors("writing the camera store (MULTI: HSET, INCR); nothing was changed", self.where), \
                self.client.pipeline(transaction=True) as tx:
            tx.hset(self._key, stream_id, json.dumps(change))
            tx.incr(self._version_key)
            tx.execute()

