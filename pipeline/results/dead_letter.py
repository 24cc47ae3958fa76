"""The results dead-letter: records a sink's output refused for good, set aside so delivery goes on.

When a sink raises :class:`~pipeline.core.errors.SinkRejectedError` (a webhook answering 400, 413 or
422, a Redis user without permission, a JSONL path that is a directory), retrying the same records can
never succeed. The sink runner (:mod:`pipeline.results.delivery`) then puts each refused entry on the
``results:deadletter`` stream of its bus shard (:class:`pipeline.core.keys.KeySpace`, bounded by
``redis.deadletter_maxlen``) and acknowledges it, in one transaction with the count kept per sink in the
``results:rejected`` hash, so the next batch is delivered. Each dead-letter entry carries:

==============  ==================================================================================
field           what
==============  ==================================================================================
``sink``        the sink's name (``sinks[].name``, default ``<type>-<index>``)
``reason``      why its output refused it (URLs redacted)
``status``      the HTTP status, or ``""`` when the output is not HTTP
``entry_id``    the entry's id on the results stream
``at``          when it was set aside (Unix seconds)
``r.<field>``   every field of the entry as stored on the results stream (``r.stream``, ``r.frame_id``...)
==============  ==================================================================================

``/readyz`` and the console read the per-sink totals with :func:`read_rejections`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.typing import EncodableT, FieldT

from pipeline.core.clock import iso_utc
from pipeline.core.keys import KeySpace
from pipeline.core.redis_clients import RedisClient

RECORD_PREFIX = "r."


@dataclass(frozen=True)
class Refused:
    """One results-stream entry a sink's output refused."""

    entry_id: bytes
    fields: dict[bytes, bytes]
    stream_id: str  # the camera, for the metric's label


@dataclass(frozen=True)
class Rejection:
    reason: str
    status: int | None


def dead_letter_fields(sink: str, refused: Refused, why: Rejection, now_s: float) -> dict[FieldT, EncodableT]:
    """One dead-letter entry: who refused it, why, and the record as it was on the results stream."""
    out: dict[FieldT, EncodableT] = {b"sink": sink.encode(), b"reason": why.reason.encode(),
                                     b"status": b"" if why.status is None else str(why.status).encode(),
                                     b"entry_id": refused.entry_id, b"at": f"{now_s:.3f}".encode()}
    out.update((RECORD_PREFIX.encode() + k, v) for k, v in refused.fields.items())
    return out


def set_aside(client: RedisClient, keys: KeySpace, *, sink: str, group: str, maxlen: int,
              refused: list[tuple[Refused, Rejection]], ack_ids: list[bytes], now_s: float) -> None:
    """Dead-letter ``refused``, count them for ``sink`` and acknowledge ``ack_ids`` (the whole batch), in one
    transaction: a crash leaves either all of it or none (then the batch is delivered again)."""
    with client.pipeline(transaction=True) as p:
        for entry, why in refused:
            p.xadd(keys.results_deadletter, dead_letter_fields(sink, entry, why, now_s),
                   maxlen=maxlen, approximate=True)
        if refused:
            last = refused[-1][1]
            p.hincrby(keys.sink_rejections, f"records:{sink}", len(refused))
            p.hset(keys.sink_rejections, f"last:{sink}",
                   json.dumps({"reason": last.reason, "status": last.status, "at": now_s}))
        if ack_ids:
            p.xack(keys.results, group, *ack_ids)
        p.execute()


def read_rejections(client: RedisClient, keys: KeySpace) -> dict[str, dict[str, Any]]:
    """Per sink, what one shard's ``results:rejected`` hash says: ``records`` and ``last`` (or None)."""
    out: dict[str, dict[str, Any]] = {}
    for raw_key, raw_value in client.hgetall(keys.sink_rejections).items():
        kind, _, sink = raw_key.decode().partition(":")
        doc = out.setdefault(sink, {"records": 0, "last": None})
        if kind == "records":
            doc["records"] = int(raw_value)
        elif kind == "last":
            doc["last"] = json.loads(raw_value)
    return out


def merge_rejections(sinks: list[str], per_shard: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The document ``/readyz`` and the console show: per sink (configured ones first, each listed) the
    records dead-lettered over every shard and the newest refusal."""
    names = list(dict.fromkeys([*sinks, *(s for shard in per_shard for s in shard)]))
    out = []
    for name in names:
        records, last = 0, None
        for shard in per_shard:
            doc = shard.get(name)
            if doc is None:
                continue
            records += doc["records"]
            if doc["last"] is not None and (last is None or doc["last"]["at"] > last["at"]):
                last = doc["last"]
        out.append({"name": name, "rejected_records": records, "last_rejection": None if last is None else
                    {"reason": last["reason"], "status": last["status"], "at": iso_utc(last["at"])}})
    return out
