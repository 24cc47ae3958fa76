"""The states of ``kind: state`` classifiers: one per camera, zone and classifier, from their results.

A result counts as the class it names when its score is at least the classifier's ``min_score``, and as
``unknown`` when it is below (never a guess). The state changes only after ``confirm`` consecutive results
agree on the new value; each change is a ``state_changed`` event::

    {"event": "state_changed", "stream": "driveway", "zone": "gate", "classifier": "gate",
     "from": "closed", "to": "open", "score": 0.97, "since": 1732600000.1, "frame_id": "...",
     "capture_ts": 1732600000.1}

(``from`` is null for the first state after the classifier starts; ``since`` is the capture time of the
result that settled it; a camera's ingest state changes are ``state_changed`` events without
``classifier``.) Results a little out of capture order are handled as the events sink does: one
captured before the newest already seen for its camera, zone and classifier is ignored.

The tracker is pure logic; what it knows is :meth:`StateTracker.dirty` after each batch, which a sink saves
(:class:`StateStore`) so that the states and their since-when survive a restart of the sink worker.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from pipeline.core.config import UNKNOWN_STATE, ClassifierConfig, EventOptions, VigilConfig, sink_name
from pipeline.results.record import ResultRecord

STATE_CHANGED = "state_changed"
Key = tuple[str, str, str]  # camera, zone, classifier


class StateStore(Protocol):
    """Where a sink keeps its classifiers' states (:class:`pipeline.results.state_store.RedisStateStore`)."""

    def load(self) -> dict[str, str]: ...

    def save(self, states: Mapping[str, str]) -> None: ...


class NoStateStore:
    """The store of a sink that keeps nothing (tests, tools): states start over with the process."""

    def load(self) -> dict[str, str]:
        return {}

    def save(self, states: Mapping[str, str]) -> None:
        return None


@dataclass
class ZoneState:
    """One classifier's state on one camera's zone, and the run of results that may change it."""

    state: str | None = None  # None until the first state is settled
    since: float | None = None  # capture time of the result that settled it
    score: float = 0.0  # of the newest result that agreed with it
    candidate: str | None = None
    count: int = 0
    newest_capture_ts: float = -math.inf

    def to_json(self) -> str:
        d = asdict(self)
        d["newest_capture_ts"] = None if math.isinf(self.newest_capture_ts) else self.newest_capture_ts
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> ZoneState:
        d = json.loads(text)
        newest = d.get("newest_capture_ts")
        return cls(d.get("state"), d.get("since"), float(d.get("score", 0.0)), d.get("candidate"),
                   int(d.get("count", 0)), -math.inf if newest is None else float(newest))


@dataclass(frozen=True)
class StateSource:
    """Where the metrics read the classifiers' states: the store of the config's first events-logic sink (events
    or MQTT, which track them), and the ``state`` classifiers (what bounds the metric's labels)."""

    sink: str
    classifiers: tuple[ClassifierConfig, ...]

    @classmethod
    def from_config(cls, cfg: VigilConfig) -> StateSource | None:
        tracking = [sink_name(s, i) for i, s in enumerate(cfg.sinks) if isinstance(s, EventOptions)]
        states = tuple(c for c in cfg.classifiers if c.kind == "state")
        return cls(tracking[0], states) if tracking and states else None


def state_key(stream: str, zone: str, classifier: str) -> str:
    """A state's name in a :class:`StateStore`: ``camera/zone/classifier`` (ids cannot contain ``/``)."""
    return f"{stream}/{zone}/{classifier}"


class StateTracker:
    """Every ``state`` classifier's state per camera and zone (the other classifiers are not tracked)."""

    def __init__(self, classifiers: Sequence[ClassifierConfig]) -> None:
        self.configs = {c.id: c for c in classifiers if c.kind == "state"}
        self.states: dict[Key, ZoneState] = {}
        self._dirty: set[Key] = set()

    def restore(self, saved: Mapping[str, str]) -> None:
        """Take the states a :class:`StateStore` kept (those of classifiers no longer configured are dropped)."""
        for name, text in saved.items():
            stream, _, rest = name.partition("/")
            zone, _, classifier = rest.partition("/")
            if classifier in self.configs:
                self.states[stream, zone, classifier] = ZoneState.from_json(text)

    def dirty(self) -> dict[str, str]:
        """The states that changed since the last call, to save."""
        out = {state_key(*k): self.states[k].to_json() for k in self._dirty}
        self._dirty.clear()
        return out

    def current(self) -> dict[Key, ZoneState]:
        return dict(self.states)

    def feed(self, r: ResultRecord) -> list[dict[str, Any]]:
        """The ``state_changed`` events ``r`` settles."""
        events = []
        for cid, label in r.classification.classifiers.items():
            cfg = self.configs.get(cid)
            if cfg is None:
                continue
            key = (r.stream, r.zone, cid)
            st = self.states.setdefault(key, ZoneState())
            if r.capture_ts < st.newest_capture_ts:
                continue  # late: the state already reflects newer frames
            st.newest_capture_ts = r.capture_ts
            self._dirty.add(key)
            observed = label.name if label.score >= cfg.min_score else UNKNOWN_STATE
            if observed == st.state:
                st.candidate, st.count, st.score = None, 0, label.score
                continue
            st.count = st.count + 1 if observed == st.candidate else 1
            st.candidate = observed
            if st.count >= cfg.confirm:
                events.append({"event": STATE_CHANGED, "stream": r.stream, "zone": r.zone, "classifier": cid,
                               "from": st.state, "to": observed, "score": round(label.score, 6),
                               "since": r.capture_ts, "frame_id": r.frame_id, "capture_ts": r.capture_ts})
                st.state, st.since, st.score, st.candidate, st.count = observed, r.capture_ts, label.score, None, 0
        return events
