"""Every Redis key and consumer-group name Vigil uses, in one place.

=============================  ==========  ========================================================
key                            type        what
=============================  ==========  ========================================================
``vigil:frames:<camera>``      stream      model-ready frames of one camera (:mod:`pipeline.bus.wire`)
``vigil:results``              stream      one result record per classified frame
                                           (:mod:`pipeline.results.record`)
``vigil:deadletter``           stream      frames that could not be classified, with the reason
``vigil:failures``             hash        frame entry id -> last error of its failed batch
``vigil:results:deadletter``   stream      result records a sink's output refused for good, with the
                                           sink, the reason and the HTTP status
                                           (:mod:`pipeline.results.dead_letter`)
``vigil:results:rejected``     hash        per sink: records dead-lettered (``records:<sink>``) and
                                           the last refusal (``last:<sink>``, JSON)
``vigil:stats:<camera>``       hash        ``published``, ``inferred``, ``dead_lettered``, ``dropped_stale``,
                                           ``evicted``, ``dropped_pending``; per zone ``<count>@<zone>``
``vigil:replica:<replica>``    hash        a Serve replica's batch statistics (expires)
``vigil:preview:<camera>``     string      the camera's latest picture, JPEG at preview size (expires)
``vigil:camera:<camera>``      string      the camera's status as its ingest worker sees it, JSON (expires)
``vigil:streams``              hash        cameras added, changed or removed at runtime
                                           (:mod:`pipeline.core.camera_store`; first instance only)
``vigil:streams:version``      string      incremented with every change of ``vigil:streams``
``vigil:states:<sink>``        hash        the sink's classifier states: ``camera/zone/classifier`` -> JSON
                                           (:mod:`pipeline.results.classifier_states`; first instance only)
=============================  ==========  ========================================================

Consumer groups: ``vigil-inference`` on every frame stream; ``vigil-sink-<sink name>`` on the
results stream. Each camera's keys live on the bus shard it is pinned to
(:class:`pipeline.core.bus_layout.BusLayout`).

On a Redis Cluster (``redis.mode: cluster``) the frames, stats, results, dead-letters, failures and camera
store keys of shard ``N`` carry the hash tag ``{sN}`` after ``vigil:`` (``vigil:{s3}:frames:<camera>``,
``vigil:{s3}:results``): one shard's keys are in one hash slot, so a camera's frame, its result, its
counters and its acknowledgement stay one transaction or script, as on a single instance. Standalone
instances use the names above (:class:`KeySpace` with no tag). The other keys are read and written one
at a time and need no tag.
"""

from __future__ import annotations

from dataclasses import dataclass

REPLICA_KEY_PREFIX = "vigil:replica:"
INFERENCE_GROUP = "vigil-inference"
SINK_GROUP_PREFIX = "vigil-sink-"
PREVIEW_PREFIX = "vigil:preview:"
CAMERA_STATUS_PREFIX = "vigil:camera:"


@dataclass(frozen=True)
class KeySpace:
    """The names of one bus shard's keys: no ``tag`` on a standalone instance (the names above), ``{sN}``
    for shard ``N`` of a Redis Cluster (see the module's docstring)."""

    tag: str = ""

    @property
    def _prefix(self) -> str:
        return f"vigil:{self.tag}:" if self.tag else "vigil:"

    @classmethod
    def cluster_shard(cls, index: int) -> KeySpace:
        return cls(f"{{s{index}}}")

    def frames(self, stream_id: str) -> str:
        """The stream of a camera's frames."""
        return f"{self._prefix}frames:{stream_id}"

    def stats(self, stream_id: str) -> str:
        """The hash of a camera's frame accounting."""
        return f"{self._prefix}stats:{stream_id}"

    @property
    def frames_glob(self) -> str:
        """SCAN pattern of this shard's frame streams."""
        return self.frames("*")

    def camera_of_frames(self, key: str | bytes) -> str:
        """The camera id in one of this shard's frames stream keys (the inverse of :meth:`frames`)."""
        text = key.decode() if isinstance(key, bytes) else key
        prefix = self.frames("")
        if not text.startswith(prefix):
            raise ValueError(f"{text!r} is not a frames stream key ({prefix}<camera>)")
        return text[len(prefix):]

    @property
    def results(self) -> str:
        return f"{self._prefix}results"

    @property
    def deadletter(self) -> str:
        return f"{self._prefix}deadletter"

    @property
    def failures(self) -> str:
        return f"{self._prefix}failures"

    @property
    def results_deadletter(self) -> str:
        """Result records a sink's output refused for good (the frame dead-letter's counterpart)."""
        return f"{self._prefix}results:deadletter"

    @property
    def sink_rejections(self) -> str:
        """Per sink: how many records were dead-lettered, and the last refusal."""
        return f"{self._prefix}results:rejected"

    def classifier_states(self, sink: str) -> str:
        """A sink's ``state`` classifiers' states, per camera, zone and classifier."""
        return f"{self._prefix}states:{sink}"

    @property
    def stream_store(self) -> str:
        return f"{self._prefix}streams"

    @property
    def stream_store_version(self) -> str:
        return f"{self._prefix}streams:version"



STANDALONE = KeySpace()  # a standalone instance's names (the table above)
RESULTS_KEY = STANDALONE.results
DEADLETTER_KEY = STANDALONE.deadletter
frames_key = STANDALONE.frames
stats_key = STANDALONE.stats


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
