"""Every Redis key and consumer-group name Vigil uses, in one place.

=============================  ==========  ========================================================
key                            type        what
=============================  ==========  ========================================================
``vigil:frames:<camera>``      stream      model-ready frames of one camera (:mod:`pipeline.bus.wire`)
``vigil:results``              stream      one result record per classified frame
                                           (:mod:`pipeline.results.record`)
``vigil:deadletter``           stream      frames that could not be classified, with the reason
``vigil:failures``             hash        frame entry id -> last error of its failed batch
``vigil:stats:<camera>``       hash        ``inferred``, ``dead_lettered``, ``dropped_pending``
``vigil:replica:<replica>``    hash        a Serve replica's batch statistics (expires)
``vigil:preview:<camera>``     string      the camera's latest picture, JPEG at preview size (expires)
``vigil:camera:<camera>``      string      the camera's status as its ingest worker sees it, JSON (expires)
``vigil:streams``              hash        cameras added, changed or removed at runtime
                                           (:mod:`pipeline.console.store`; first instance only)
``vigil:streams:version``      string      incremented with every change of ``vigil:streams``
=============================  ==========  ========================================================

Consumer groups: ``vigil-inference`` on every frame stream; ``vigil-sink-<sink name>`` on the
results stream. Each camera's keys live on the Redis instance it is pinned to
(:func:`pipeline.core.redis_clients.pick_instance`).
"""

from __future__ import annotations

FRAMES_PREFIX = "vigil:frames:"
RESULTS_KEY = "vigil:results"
DEADLETTER_KEY = "vigil:deadletter"
FAILURES_KEY = "vigil:failures"
STATS_PREFIX = "vigil:stats:"
REPLICA_KEY_PREFIX = "vigil:replica:"
INFERENCE_GROUP = "vigil-inference"
SINK_GROUP_PREFIX = "vigil-sink-"
PREVIEW_PREFIX = "vigil:preview:"
STREAM_STORE_KEY = "vigil:streams"
STREAM_STORE_VERSION_KEY = "vigil:streams:version"
CAMERA_STATUS_PREFIX = "vigil:camera:"


def frames_key(stream_id: str) -> str:
    """The stream of a camera's frames."""
    return FRAMES_PREFIX + stream_id


def camera_of_frames_key(key: str | bytes) -> str:
    """The camera id in a frames stream key (the inverse of :func:`frames_key`)."""
    text = key.decode() if isinstance(key, bytes) else key
    if not text.startswith(FRAMES_PREFIX):
        raise ValueError(f"{text!r} is not a frames stream key ({FRAMES_PREFIX}<camera>)")
    return text[len(FRAMES_PREFIX):]


def stats_key(stream_id: str) -> str:
    """The hash of a camera's frame accounting."""
    return STATS_PREFIX + stream_id


def replica_key(replica: str) -> str:
    """The hash of a Serve replica's batch statistics."""
    return REPLICA_KEY_PREFIX + replica


def preview_key(stream_id: str) -> str:
    """The camera's latest picture for the console (JPEG, with a TTL)."""
    return PREVIEW_PREFIX + stream_id


def camera_status_key(stream_id: str) -> str:
    """The camera's status, written by the ingest worker that owns it (JSON, with a TTL)."""
    return CAMERA_STATUS_PREFIX + stream_id


def sink_group(sink_name: str) -> str:
    """The consumer group of one sink on the results stream."""
    return SINK_GROUP_PREFIX + sink_name
