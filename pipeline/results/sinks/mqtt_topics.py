"""What the MQTT sink publishes, where: topics, payloads and Home Assistant discovery (pure, no I/O).

Per camera, under ``<prefix>/<camera>/`` (``prefix`` is ``topic_prefix``, default ``vigil``):

=================  ========  ==============================================================
``result``         -         every result record (JSON, :mod:`pipeline.results.record`); ``rate_limit_hz``
``label``          retained  ``{"label", "score", "at", "frame_id"}``: the camera's current top-1 label, after
                             the events logic's hysteresis (:class:`~pipeline.results.sinks.events.EventDetector`)
``scene``          retained  ``{"scene", "score", "at", "frame_id"}``: the same for the scene category
``watch/<key>``    retained  ``ON`` / ``OFF``: a watched class or scene category is present
``state``          retained  ``{"state", "reason", "at"}``: the camera's ingest state (live, backing_off, ...)
``events``         -         every event of the events sink: label/scene changes, watch, health, state
=================  ========  ==============================================================

A ``state`` classifier's state on a camera's zone is retained at ``<prefix>/<camera>/<zone>/<classifier>``
(``{"state", "since", "score"}``), and Home Assistant discovery has one sensor per camera, zone and state
classifier. A zone of the camera (``streams[].zones``) has its own ``label``, ``scene`` and ``watch/<key>`` under
``<prefix>/<camera>/<zone>/``; the whole picture's are the camera's own. And ``<prefix>/availability``:
``online``, or ``offline`` (the MQTT last will, so it is also said when the sink dies). With
``discovery``, Home Assistant finds one device per camera with a sensor for the label, the scene and the
state and a binary sensor per watched key, from retained configs under
``<discovery_prefix>/<component>/vigil_<camera>_<what>/config``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import FULL_ZONE, ClassifierConfig, MqttSinkConfig
from pipeline.results.classifier_states import ZoneState

VERSION = "0.1.0"
ONLINE, OFFLINE = "online", "offline"
STATE_KINDS = ("label", "scene", "state")  # the retained state topics besides watch/<key>


def slug(text: str) -> str:
    """A topic level or Home Assistant object id: lower case letters, digits and ``_``."""
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "_"


@dataclass(frozen=True)
class Message:
    topic: str
    payload: str
    retain: bool = False


class Topics:
    """Topic names and payloads for one sink's configuration."""

    def __init__(self, cfg: MqttSinkConfig, classifiers: Sequence[ClassifierConfig] = (),
                 zones: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.cfg = cfg
        self.prefix = cfg.topic_prefix
        self.availability = f"{self.prefix}/availability"
        self._state_classifiers = [c for c in classifiers if c.kind == "state"]
        self._zones = dict(zones or {})  # camera -> its zones; a camera added at runtime: the whole picture

    def classifier_state(self, stream_id: str, zone: str, classifier: str, st: ZoneState) -> Message:
        """The retained state of a ``state`` classifier on a camera's zone: ``<prefix>/<camera>/<zone>/<id>``."""
        payload = {"state": st.state, "since": st.since, "score": round(st.score, 6)}
        return Message(f"{self.prefix}/{stream_id}/{zone}/{classifier}", json.dumps(payload), self.cfg.retain)

    def camera(self, stream_id: str, what: str) -> str:
        return f"{self.prefix}/{stream_id}/{what}"

    def result(self, record: dict[str, Any]) -> Message:
        return Message(self.camera(record["stream"], "result"), json.dumps(record))

    def event(self, event: dict[str, Any]) -> Message:
        return Message(self.camera(event["stream"], "events"), json.dumps(event))

    def state_of(self, event: dict[str, Any]) -> Message | None:
        """The retained state message an event sets (label, scene, watch or camera state), if any. A zone's
        label, scene and watch states are under ``<camera>/<zone>/``; the whole picture's (``full``) are the
        camera's own."""
        kind, retain = event["event"], self.cfg.retain
        if kind == "state_changed" and "classifier" in event:
            st = ZoneState(event["to"], event["since"], event["score"])
            return self.classifier_state(event["stream"], event["zone"], event["classifier"], st)
        zone = event.get("zone", FULL_ZONE)
        stream_id = event["stream"] if zone == FULL_ZONE else f"{event['stream']}/{zone}"
        base = {"at": event.get("capture_ts", event.get("at")), "frame_id": event.get("frame_id")}
        if kind == "label_changed":
            payload = {"label": event["to"], "score": event["score"], **base}
            return Message(self.camera(stream_id, "label"), json.dumps(payload), retain)
        if kind == "scene_changed":
            payload = {"scene": event["to"], "score": event["score"], **base}
            return Message(self.camera(stream_id, "scene"), json.dumps(payload), retain)
        if kind in ("watch_appeared", "watch_cleared"):
            value = "ON" if kind == "watch_appeared" else "OFF"
            return Message(self.camera(stream_id, f"watch/{slug(event['label'])}"), value, retain)
        if kind == "state_changed":
            payload = {"state": event["state"], "reason": event.get("reason", ""), "at": event["at"]}
            return Message(self.camera(stream_id, "state"), json.dumps(payload), retain)
        return None

    # -- Home Assistant ----------------------------------------------------------------------------

    def discovery(self, streams: tuple[str, ...]) -> list[Message]:
        """Retained discovery configs: per camera a device with label, scene and state sensors and a
        binary sensor per watched key."""
        if not self.cfg.discovery:
            return []
        return [m for stream_id in streams for m in self._camera_discovery(stream_id)]

    def _camera_discovery(self, stream_id: str) -> list[Message]:
        device = {"identifiers": [f"vigil_{slug(stream_id)}"], "name": f"Vigil {stream_id}", "manufacturer": "Vigil",
                  "model": "camera analytics", "sw_version": VERSION}
        common = {"availability_topic": self.availability, "payload_available": ONLINE,
                  "payload_not_available": OFFLINE, "device": device,
                  "origin": {"name": "vigil", "sw_version": VERSION}}
        sensors = {"label": ("Label", "{{ value_json.label }}", "mdi:tag"),
                   "scene": ("Scene", "{{ value_json.scene }}", "mdi:image-filter-hdr"),
                   "state": ("Camera state", "{{ value_json.state }}", "mdi:cctv")}
        out = []
        for what, (name, template, icon) in sensors.items():
            config = {"name": name, "unique_id": f"vigil_{slug(stream_id)}_{what}", "object_id":
                      f"vigil_{slug(stream_id)}_{what}", "state_topic": self.camera(stream_id, what),
                      "value_template": template, "json_attributes_topic": self.camera(stream_id, what),
                      "icon": icon, **common}
            out.append(self._config("sensor", f"vigil_{slug(stream_id)}_{what}", config))
        for zone, c in self._states_of(stream_id):
            object_id = f"vigil_{slug(stream_id)}_{slug(zone)}_{slug(c.id)}"
            topic = f"{self.prefix}/{stream_id}/{zone}/{c.id}"
            config = {"name": f"{zone} {c.id}", "unique_id": object_id, "object_id": object_id, "state_topic": topic,
                      "value_template": "{{ value_json.state }}", "json_attributes_topic": topic,
                      "icon": "mdi:state-machine", **common}
            out.append(self._config("sensor", object_id, config))
        for key in self.cfg.watch:
            object_id = f"vigil_{slug(stream_id)}_watch_{slug(key)}"
            config = {"name": f"{key} seen", "unique_id": object_id, "object_id": object_id,
                      "state_topic": self.camera(stream_id, f"watch/{slug(key)}"), "payload_on": "ON",
                      "payload_off": "OFF", "icon": "mdi:eye", **common}
            out.append(self._config("binary_sensor", object_id, config))
        return out

    def _states_of(self, stream_id: str) -> list[tuple[str, ClassifierConfig]]:
        """The (zone, state classifier) pairs of a camera: one Home Assistant sensor each."""
        zones = self._zones.get(stream_id, (FULL_ZONE,))
        return [(z, c) for c in self._state_classifiers for z in zones if c.runs_on(stream_id, z)]

    def _config(self, component: str, object_id: str, config: dict[str, Any]) -> Message:
        return Message(f"{self.cfg.discovery_prefix}/{component}/{object_id}/config", json.dumps(config), True)
