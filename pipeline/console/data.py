"""What the console shows, read from Redis only, so a console on any machine sees what ``vigil run`` sees.

Per camera: its configuration (URL redacted), the status its ingest worker keeps in Redis
(:func:`pipeline.core.keys.camera_status_key`; ``unknown`` when no worker refreshed it lately), its
newest result, frame age and timeline of changes (:mod:`pipeline.console.tail`, which follows the
results streams), its frame accounting and its latest picture (:func:`pipeline.core.keys.preview_key`).
Per sink: the records its output refused for good and the last refusal (:mod:`pipeline.results.dead_letter`).
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.console.tail import CameraTail, ResultsTail
from pipeline.core.bus_layout import BusClients
from pipeline.core.camera_store import StreamStore, effective_streams
from pipeline.core.clock import iso_utc
from pipeline.core.config import FULL_ZONE, EventOptions, StreamConfig, VigilConfig, sink_name
from pipeline.core.errors import BusError
from pipeline.core.keys import camera_status_key, preview_key
from pipeline.core.redis_clients import RedisClient
from pipeline.core.redis_errors import redis_errors
from pipeline.results.classifier_states import ZoneState
from pipeline.results.dead_letter import merge_rejections, read_rejections
from pipeline.results.record import ResultRecord, headline, newest_by_zone


def _zones(s: StreamConfig, newest: dict[str, ResultRecord], problems: dict[str, str],
           states: dict[tuple[str, str], ZoneState]) -> list[dict[str, Any]]:
    """The camera's zones as the console draws them: where (fractions of the picture; the whole picture is
    ``full``), the newest ImageNet label and classifier answers, the ``state`` classifiers' states, and why a zone
    is not classified (too small on the camera's resolution)."""
    def answers(zone: str) -> dict[str, Any]:
        r = newest.get(zone)
        top = r.classification.top1 if r is not None else None
        if r is None:
            return {"label": None, "classifiers": {}}
        return {"label": {"name": top.name, "score": round(top.score, 4), "at": iso_utc(r.capture_ts)} if top else None,
                "classifiers": {cid: {"label": lab.name, "score": round(lab.score, 4)}
                                for cid, lab in r.classification.classifiers.items()}}

    def zone_states(zone: str) -> dict[str, Any]:
        return {cid: {"state": st.state, "since": iso_utc(st.since) if st.since else None}
                for (z, cid), st in sorted(states.items()) if z == zone}

    out: list[dict[str, Any]] = [{"id": FULL_ZONE, "xyxy": [0.0, 0.0, 1.0, 1.0], "polygon": None, "resize": s.resize,
                                  **answers(FULL_ZONE), "states": zone_states(FULL_ZONE), "problem": None}] \
        if s.full_frame else []
    out += [{"id": z.id, "xyxy": list(z.box_xyxy), "polygon": [list(p) for p in z.polygon] if z.polygon else None,
             "resize": z.resize, **answers(z.id), "states": zone_states(z.id), "problem": problems.get(z.id)}
            for z in s.zones]
    return out


def hysteresis_of(cfg: VigilConfig) -> int:
    """The hysteresis of the config's first events-logic sink (events, MQTT), else the events sink's default."""
    watchers = [s for s in cfg.sinks if isinstance(s, EventOptions)]
    return watchers[0].hysteresis if watchers else 3


class ConsoleData:
    """Reads for the console through the bus's clients."""

    def __init__(self, cfg: VigilConfig, clients: BusClients, tail: ResultsTail) -> None:
        self.cfg, self.clients, self.tail = cfg, clients, tail
        self.store = StreamStore(clients.client(0), clients.keys(0), where=clients.where(0))

    def streams(self) -> list[StreamConfig]:
        """The cameras that run: the YAML's with the camera store's changes (:mod:`pipeline.core.camera_store`)."""
        try:
            changes = self.store.changes()
        except BusError:
            return list(self.cfg.streams)
        return effective_streams(self.cfg.streams, changes)[0]

    def stream(self, stream_id: str) -> StreamConfig | None:
        return next((s for s in self.streams() if s.id == stream_id), None)

    def _client(self, stream_id: str) -> RedisClient:
        return self.clients.client(self.clients.layout.shard_of(stream_id))

    def _where(self, stream_id: str) -> str:
        return self.clients.where(self.clients.layout.shard_of(stream_id))

    def _get(self, stream_id: str, key: str) -> bytes | None:
        try:
            with redis_errors(f"GET {key}", self._where(stream_id)):
                value: bytes | None = self._client(stream_id).get(key)
        except BusError:
            return None
        return value

    def resolution_wh(self, stream_id: str) -> tuple[int, int] | None:
        """The camera's picture size as its ingest worker last decoded it; None when no worker said lately."""
        raw = self._get(stream_id, camera_status_key(stream_id))
        size = json.loads(raw).get("resolution_wh") if raw else None
        return (int(size[0]), int(size[1])) if size else None

    def snapshot(self, stream_id: str) -> bytes | None:
        """The camera's latest picture (JPEG), or None when it has none (not live lately, or Redis away)."""
        return self._get(stream_id, preview_key(stream_id))

    def views(self) -> list[dict[str, Any]]:
        """Every configured camera as the console lists it."""
        return [self._view(s, self.tail.camera(s.id)) for s in self.streams()]

    def view(self, stream_id: str) -> dict[str, Any] | None:
        stream = self.stream(stream_id)
        if stream is None:
            return None
        return self._view(stream, self.tail.camera(stream_id))

    def _view(self, s: StreamConfig, recent: CameraTail) -> dict[str, Any]:
        raw = self._get(s.id, camera_status_key(s.id))
        status: dict[str, Any] = json.loads(raw) if raw else {}
        newest = newest_by_zone(recent.results)
        latest = headline(newest.values())
        top = latest.classification.top1 if latest is not None else None
        scene = latest.classification.scene if latest is not None else None
        age = recent.frame_age_p95_ms()
        return {
            "id": s.id, "url": s.redacted_url(), "state": status.get("state", "unknown"),
            "reason": status.get("last_error", "") if raw else "no ingest worker reported this camera lately",
            "since": status.get("since"), "health": status.get("health", []),
            "fps": s.fps, "fps_effective": status.get("fps", {}).get("effective"),
            "resize": s.resize, "loop": s.loop,
            "label": {"name": top.name, "score": round(top.score, 4)} if top is not None else None,
            "scene": {"name": scene.name, "score": round(scene.score, 4)} if scene is not None else None,
            "result_at": iso_utc(latest.capture_ts) if latest is not None else None,
            "frame_age_p95_ms": round(age, 1) if age is not None else None,
            "frames": self._accounting(s.id),
            "zones": _zones(s, newest, status.get("zone_problems", {}), self.tail.states(s.id)),
        }

    def _accounting(self, stream_id: str) -> dict[str, int]:
        try:
            with redis_errors("reading the frame accounting (HGETALL)", self._where(stream_id)):
                raw = self._client(stream_id).hgetall(self.clients.layout.keys_of(stream_id).stats(stream_id))
            stats = {k.decode(): int(v) for k, v in raw.items()}
        except BusError:
            stats = {}
        return {"published": stats.get("published", 0), "classified": stats.get("inferred", 0),
                "dead_lettered": stats.get("dead_lettered", 0),
                "stale": stats.get("dropped_stale", 0) + stats.get("dropped_pending", 0)}

    def sinks(self) -> list[dict[str, Any]]:
        """Per configured sink: records its output refused for good (dead-lettered) and the last refusal, over
        every shard (a shard that does not answer is left out)."""
        per_shard = []
        for idx, client, keys in self.clients:
            try:
                with redis_errors("reading the sinks' rejections", self.clients.where(idx)):
                    per_shard.append(read_rejections(client, keys))
            except BusError:
                continue
        return merge_rejections([sink_name(s, i) for i, s in enumerate(self.cfg.sinks)], per_shard)

    def timeline(self, stream_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """The camera's recent changes, oldest first: label and scene changes, state and health changes."""
        return [{k: v for k, v in e.items() if k != "at_s"} for e in list(self.tail.camera(stream_id).changes)[-limit:]]

    def recent_results(self, stream_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return [r.as_dict() for r in list(self.tail.camera(stream_id).results)[-limit:]]
