"""The events sink: only what changed, per camera and zone, with hysteresis against flicker.

Events (JSON objects, to a JSON-lines file and/or a webhook):

* ``label_changed``: the camera's top-1 label differs from the last stable one for ``hysteresis``
  consecutive results (the first stable label after start is reported with ``"from": null``);
* ``scene_changed``: the same for the scene category;
* ``watch_appeared`` / ``watch_cleared``: a class of ``watch`` is in the top-k at or above its
  minimum score, or a scene category of ``watch`` is the frame's scene with that score, for
  ``hysteresis`` consecutive results / then absent for as many. A key is a class name or any synonym
  (``Egyptian_cat``, ``scooter``), a class index (``518_crane``) or a scene category (``people``):
  :class:`pipeline.core.class_names.ClassRef`. The event's ``label`` is the key as configured;
* ``state_changed`` with ``classifier``: a ``state`` classifier's state on a camera's zone changed
  (:mod:`pipeline.results.classifier_states`; kept in Redis, so it survives a restart of the sink worker);
* ``health_changed``: a camera's picture became (``"active": true``) or stopped being frozen, dark,
  blurred or moved, as ingest judged it; ``state_changed``: its ingest state changed (live,
  backing_off, ...), with the reason (:mod:`pipeline.results.camera_event`).

Each zone of a camera (``streams[].zones``; the whole picture is the zone ``full``) has its own label,
scene and watch states. Each event carries ``stream``, ``zone``, ``frame_id``, ``capture_ts`` and
``score`` of the result that settled it. State is kept in memory: after a restart the current labels are reported again.

Results of one camera can reach the results stream a little out of capture order (a replica
classifies batches side by side; a crashed replica's frames are reclaimed later). A result captured
before the newest one already seen for its camera is ignored, so a late result cannot flip a label
back and forth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pipeline.core.backoff import Backoff
from pipeline.core.class_names import ClassRef
from pipeline.core.config import ClassifierConfig, EventsSinkConfig
from pipeline.core.errors import SinkRejectedError
from pipeline.results.camera_event import CameraEvent
from pipeline.results.classifier_states import StateTracker
from pipeline.results.record import ResultRecord
from pipeline.results.sinks.base import SinkContext
from pipeline.results.sinks.files import RotatingJsonl
from pipeline.results.sinks.webhook import WebhookPoster


@dataclass
class _Debounced:
    """A value that changes only after ``n`` consecutive observations of the new value."""

    n: int
    stable: Any = None
    candidate: Any = None
    count: int = 0

    def observe(self, value: Any) -> bool:
        """Feed one observation; True when the stable value changed."""
        if value == self.stable:
            self.candidate, self.count = None, 0
            return False
        if value == self.candidate:
            self.count += 1
        else:
            self.candidate, self.count = value, 1
        if self.count >= self.n:
            self.stable, self.candidate, self.count = value, None, 0
            return True
        return False


@dataclass
class _Camera:
    label: _Debounced
    scene: _Debounced
    watched: dict[str, _Debounced] = field(default_factory=dict)
    newest_capture_ts: float = float("-inf")


class EventDetector:
    """Turns result records into change events (pure logic; no I/O): label, scene and watch changes, and the
    ``state_changed`` events of the ``state`` classifiers (:class:`~pipeline.results.classifier_states.StateTracker`,
    ``states``)."""

    def __init__(self, hysteresis: int, watch: dict[str, float],
                 classifiers: Sequence[ClassifierConfig] = ()) -> None:
        self.hysteresis = hysteresis
        self.states = StateTracker(classifiers)
        self.watch = {ClassRef.parse(key): minimum for key, minimum in watch.items()}
        self._cameras: dict[tuple[str, str], _Camera] = {}  # (camera, zone) -> its states

    def _camera(self, stream_id: str, zone: str) -> _Camera:
        cam = self._cameras.get((stream_id, zone))
        if cam is None:
            n = self.hysteresis
            cam = _Camera(_Debounced(n), _Debounced(n), {w.text: _Debounced(n, stable=False) for w in self.watch})
            self._cameras[stream_id, zone] = cam
        return cam

    def feed(self, r: ResultRecord) -> list[dict[str, Any]]:
        cam = self._camera(r.stream, r.zone)
        if r.capture_ts < cam.newest_capture_ts:
            return []  # a late result: the zone's state already reflects newer frames
        cam.newest_capture_ts = r.capture_ts
        base = {"stream": r.stream, "zone": r.zone, "frame_id": r.frame_id, "capture_ts": r.capture_ts}
        events: list[dict[str, Any]] = []
        top, scene = r.classification.top1, r.classification.scene
        old_label, old_scene = cam.label.stable, cam.scene.stable
        if top is not None and cam.label.observe(top.name):
            events.append({"event": "label_changed", **base, "from": old_label, "to": top.name, "score": top.score})
        if scene is not None and cam.scene.observe(scene.name):
            events.append({"event": "scene_changed", **base, "from": old_scene, "to": scene.name,
                           "score": scene.score})
        for ref, minimum in self.watch.items():
            score = r.classification.score_of(ref)
            present = score >= minimum
            if cam.watched[ref.text].observe(present):
                kind = "watch_appeared" if present else "watch_cleared"
                events.append({"event": kind, **base, "label": ref.text, "score": score})
        return events + self.states.feed(r)


class EventsSink:
    def __init__(self, cfg: EventsSinkConfig, ctx: SinkContext) -> None:
        self.detector = EventDetector(cfg.hysteresis, cfg.watch, ctx.classifiers)
        self._store = ctx.state_store
        self._file = RotatingJsonl(Path(cfg.path), 100 * 1024 * 1024, 5) if cfg.path else None
        self._poster = WebhookPoster(cfg.url, cfg.timeout_s, backoff=Backoff(cfg.backoff_base_s, cfg.backoff_cap_s)) \
            if cfg.url else None

    def __enter__(self) -> EventsSink:
        self.detector.states.restore(self._store.load())
        if self._file is not None:
            self._file.open()
        if self._poster is not None:
            self._poster.open()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._file is not None:
            self._file.close()
        if self._poster is not None:
            self._poster.close()

    def write(self, records: list[ResultRecord]) -> None:
        self._emit([e for r in records for e in self.detector.feed(r)])
        self._store.save(self.detector.states.dirty())

    def write_camera_events(self, events: list[CameraEvent]) -> None:
        """A camera's picture or state changed (already debounced by ingest): emitted as they are."""
        self._emit([e.as_dict() for e in events])

    def _emit(self, events: list[dict[str, Any]]) -> None:
        """Raises SinkRejectedError that does not split: the events come from the batch as a whole (the
        detector has seen its records), so the runner sets aside the batch instead of trying halves."""
        if not events:
            return
        try:
            if self._file is not None:
                self._file.write_lines(events)
            if self._poster is not None:
                self._poster.post(events)
        except SinkRejectedError as exc:
            raise SinkRejectedError(f"{exc} (the {len(events)} event(s) of this batch)", exc.reason,
                                    status=exc.status, split=False) from exc
