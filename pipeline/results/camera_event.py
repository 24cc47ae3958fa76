"""Camera events: what ingest knows of a camera that is not a result, told to the sinks in order with them.

Ingest writes one to the results stream (``vigil:results``, on the camera's Redis instance) beside the
result records, so the sinks hear of it in order with the results: the events sink emits it (to its
file and webhook), the MQTT sink on the camera's events topic (and the state topic); sinks that store
results skip it. On Redis it is an entry with fields ``v``, ``stream``, ``kind`` (result records have
none) and ``json``; readers of the stream tell the two apart only through :mod:`pipeline.results.entry`
(why events share the stream: there). Two kinds:

* :class:`HealthEvent` (``health_changed``): the picture became, or stopped being, frozen, dark,
  blurred or moved (a transition of :mod:`pipeline.ingest.health`)::

    {"v": 1, "event": "health_changed", "stream": "front-door", "condition": "frozen",
     "active": true, "at": 1732600000.1,
     "stats": {"luma_mean": 118.2, "luma_spread": 51.0, "sharpness": 812.4, "change": 0.0,
               "view_correlation": 0.97}}

* :class:`StateEvent` (``state_changed``): the camera's ingest state changed (connecting, live,
  stalled, backing_off, failed, stopped), with the reason when it is not live::

    {"v": 1, "event": "state_changed", "stream": "front-door", "state": "backing_off",
     "reason": "open failed: connection refused by 192.0.2.10:554", "at": 1732600000.1}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.errors import ResultFormatError

HEALTH_KIND = "health_changed"
STATE_KIND = "state_changed"
EVENT_VERSION = 1


def _kind(fields: Mapping[Any, Any]) -> str | None:
    kind = fields.get(b"kind", fields.get("kind"))
    return kind.decode() if isinstance(kind, bytes) else kind


def is_camera_event(fields: Mapping[Any, Any]) -> bool:
    """Whether a results-stream entry is a camera event rather than a result record."""
    return _kind(fields) in (HEALTH_KIND, STATE_KIND)


def _payload(fields: Mapping[Any, Any]) -> dict[str, Any]:
    raw = fields.get(b"json", fields.get("json"))
    try:
        d = json.loads(raw)
    except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ResultFormatError(f"malformed camera event: {type(exc).__name__}: {exc}") from exc
    if not isinstance(d, dict):
        raise ResultFormatError(f"malformed camera event: a {type(d).__name__}, not an object")
    return d


@dataclass(frozen=True)
class HealthEvent:
    stream: str
    condition: str
    active: bool  # True: the condition began; False: it cleared
    at: float  # Unix seconds
    stats: dict[str, float] = field(default_factory=dict)  # the frame statistics at the transition

    def as_dict(self) -> dict[str, Any]:
        # JSON has no NaN: a statistic not known yet (no reference view) is null.
        stats = {k: (round(v, 4) if math.isfinite(v) else None) for k, v in self.stats.items()}
        return {"v": EVENT_VERSION, "event": HEALTH_KIND, "stream": self.stream, "condition": self.condition,
                "active": self.active, "at": round(self.at, 3), "stats": stats}

    def to_fields(self) -> dict[str, str]:
        return {"v": str(EVENT_VERSION), "stream": self.stream, "kind": HEALTH_KIND, "json": json.dumps(self.as_dict())}

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> HealthEvent:
        d = _payload(fields)
        try:
            return cls(stream=str(d["stream"]), condition=str(d["condition"]), active=bool(d["active"]),
                       at=float(d["at"]), stats={k: float("nan") if v is None else float(v)
                                                 for k, v in d.get("stats", {}).items()})
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise ResultFormatError(f"malformed health event: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class StateEvent:
    stream: str
    state: str  # a CameraState value
    reason: str  # why it is not live ("" when live or stopped on purpose)
    at: float  # Unix seconds

    def as_dict(self) -> dict[str, Any]:
        return {"v": EVENT_VERSION, "event": STATE_KIND, "stream": self.stream, "state": self.state,
                "reason": self.reason, "at": round(self.at, 3)}

    def to_fields(self) -> dict[str, str]:
        return {"v": str(EVENT_VERSION), "stream": self.stream, "kind": STATE_KIND, "json": json.dumps(self.as_dict())}

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any]) -> StateEvent:
        d = _payload(fields)
        try:
            return cls(stream=str(d["stream"]), state=str(d["state"]), reason=str(d.get("reason", "")),
                       at=float(d["at"]))
        except (TypeError, KeyError, ValueError) as exc:
            raise ResultFormatError(f"malformed state event: {type(exc).__name__}: {exc}") from exc


CameraEvent = HealthEvent | StateEvent


def camera_event_from_fields(fields: Mapping[Any, Any]) -> CameraEvent:
    """The camera event in a results-stream entry (:func:`is_camera_event` said it is one)."""
    return StateEvent.from_fields(fields) if _kind(fields) == STATE_KIND else HealthEvent.from_fields(fields)
