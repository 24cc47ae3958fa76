"""The result record: one per classified crop (a frame's zone), on the Redis results stream, read by every sink.

Record (JSON object, format version 2)::

    {
      "v": 2,
      "stream": "front-door",            camera id
      "zone": "full",                    the zone classified: "full" (the whole picture) or one of
                                         streams[].zones
      "seq": 42,                         ingest sequence number of the frame
      "frame_id": "1732600000000-0",     Redis entry id of the frame on vigil:frames:<stream>
      "capture_ts": 1732600000.123,      capture time, Unix seconds
      "inference_ts": 1732600000.180,    when the result was produced, Unix seconds
      "model": {"name": "...", "version": "..."},
      "top_k": [{"index": 286, "label": "Egyptian cat", "score": 0.78}, ...],
      "scene": {"index": 0, "label": "animals", "score": 0.95} | null,
      "latency_ms": {"queue": 12.0, "inference": 30.5, "total": 57.1},
      "batch_size": 32,
      "replica": "host-1234-ab12"
    }

``latency_ms.queue`` is capture -> picked up by a replica, ``inference`` the batch's model time,
``total`` capture -> result produced. On Redis the record is one entry of ``vigil:results`` with
fields ``v``, ``stream`` and ``json`` (the object above), written in the same transaction that
acknowledges the frame, so a result exists exactly when its frame is acknowledged: a frame's records (one
per zone, same ``frame_id``, ``seq`` and ``capture_ts``) are written together or not at all. A version-1
record (before zones) reads as the zone ``full``.

Within one camera, results are written roughly in capture order, not exactly: a replica classifies
its batch in lanes side by side (``inference.lanes``), and frames reclaimed from a crashed replica
come later. ``seq`` and ``capture_ts`` give the order; the events sink ignores late results.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.core.classification import FrameClassification
from pipeline.core.config import FULL_ZONE
from pipeline.core.errors import ResultFormatError
from pipeline.core.model_identity import ModelIdentity

RESULT_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class ResultRecord:
    stream: str
    zone: str
    seq: int
    frame_id: str
    capture_ts: float
    inference_ts: float
    model: ModelIdentity
    classification: FrameClassification
    queue_ms: float
    inference_ms: float
    batch_size: int
    replica: str

    @classmethod
    def build(cls, *, stream: str, zone: str, seq: int, frame_id: str, capture_ts: float, inference_ts: float,
              picked_ts: float, model: ModelIdentity, result: FrameClassification, inference_ms: float,
              batch_size: int, replica: str) -> ResultRecord:
        return cls(stream=stream, zone=zone, seq=seq, frame_id=frame_id, capture_ts=capture_ts,
                   inference_ts=inference_ts, model=model, classification=result,
                   queue_ms=max(0.0, (picked_ts - capture_ts) * 1000), inference_ms=inference_ms,
                   batch_size=batch_size, replica=replica)

    @property
    def total_ms(self) -> float:
        return max(0.0, (self.inference_ts - self.capture_ts) * 1000)

    @property
    def top1(self) -> str:
        top = self.classification.top1
        return top.name if top is not None else ""

    @property
    def scene(self) -> str | None:
        scene = self.classification.scene
        return scene.name if scene is not None else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "v": RESULT_VERSION, "stream": self.stream, "zone": self.zone, "seq": self.seq, "frame_id": self.frame_id,
            "capture_ts": round(self.capture_ts, 6), "inference_ts": round(self.inference_ts, 6),
            "model": self.model.as_dict(),
            **self.classification.as_dict(),
            "latency_ms": {"queue": round(self.queue_ms, 3), "inference": round(self.inference_ms, 3),
                           "total": round(self.total_ms, 3)},
            "batch_size": self.batch_size, "replica": self.replica,
        }

    def to_fields(self) -> dict[str, str]:
        return {"v": str(RESULT_VERSION), "stream": self.stream, "json": json.dumps(self.as_dict())}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ResultRecord:
        try:
            if int(d["v"]) not in READABLE_VERSIONS:
                raise ResultFormatError(f"result record version {d['v']}; this reader understands "
                                        f"{', '.join(map(str, READABLE_VERSIONS))}")
            lat = d["latency_ms"]
            return cls(stream=str(d["stream"]), zone=str(d.get("zone", FULL_ZONE)), seq=int(d["seq"]),
                       frame_id=str(d["frame_id"]),
                       capture_ts=float(d["capture_ts"]), inference_ts=float(d["inference_ts"]),
                       model=ModelIdentity(str(d["model"]["name"]), str(d["model"]["version"])),
                       classification=FrameClassification.from_dict(d),
                       queue_ms=float(lat["queue"]), inference_ms=float(lat["inference"]),
                       batch_size=int(d["batch_size"]), replica=str(d["replica"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultFormatError(f"malformed result record: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> ResultRecord:
        raw = fields.get(b"json", fields.get("json"))
        if raw is None:
            raise ResultFormatError("results entry has no 'json' field")
        try:
            return cls.from_dict(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise ResultFormatError(f"results entry 'json' is not JSON: {exc}") from exc


def newest_by_zone(records: Iterable[ResultRecord]) -> dict[str, ResultRecord]:
    """The newest record (by capture time) of each zone among ``records``."""
    out: dict[str, ResultRecord] = {}
    for r in records:
        kept = out.get(r.zone)
        if kept is None or r.capture_ts >= kept.capture_ts:
            out[r.zone] = r
    return out


def headline(records: Iterable[ResultRecord]) -> ResultRecord | None:
    """What a camera's picture is labelled with: the newest record of the whole picture (zone ``full``), else,
    for a camera without it (``full_frame: false``), the newest of its first zone by name."""
    newest = newest_by_zone(records)
    return newest.get(FULL_ZONE) or (newest[min(newest)] if newest else None)
