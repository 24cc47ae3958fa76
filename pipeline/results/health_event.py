"""The health event: a camera's picture became (or stopped being) frozen, dark, blurred or moved.

Ingest writes one to the results stream (``vigil:results``, on the camera's Redis instance) at each
transition of :mod:`pipeline.ingest.health`, beside the result records, so the sinks hear of it in
order with the results: the events sink turns it into a ``health_changed`` event (to its file and
webhook); sinks that store results skip it. On Redis it is an entry with fields ``v``, ``stream``,
``kind`` (``health_changed``: result records have none) and ``json``::

    {"v": 1, "event": "health_changed", "stream": "front-door", "condition": "frozen",
     "active": true, "at": 1732600000.1,
     "stats": {"luma_mean": 118.2, "luma_spread": 51.0, "sharpness": 812.4, "change": 0.0,
               "view_correlation": 0.97}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.errors import ResultFormatError

HEALTH_KIND = "health_changed"
EVENT_VERSION = 1


def is_health_event(fields: Mapping[Any, Any]) -> bool:
    """Whether a results-stream entry is a health event rather than a result record."""
    kind = fields.get(b"kind", fields.get("kind"))
    return kind in (HEALTH_KIND, HEALTH_KIND.encode())


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
        raw = fields.get(b"json", fields.get("json"))
        try:
            d = json.loads(raw)
            return cls(stream=str(d["stream"]), condition=str(d["condition"]), active=bool(d["active"]),
                       at=float(d["at"]), stats={k: float("nan") if v is None else float(v)
                                                 for k, v in d.get("stats", {}).items()})
        except (TypeError, KeyError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise ResultFormatError(f"malformed health event: {type(exc).__name__}: {exc}") from exc
