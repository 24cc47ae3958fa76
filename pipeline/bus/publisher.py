"""The frame bus: model-ready frames on Redis Streams, one stream per camera.

Wire format (version 1)
-----------------------
Each camera ``<stream_id>`` has one Redis Stream, key ``vigil:frames:<stream_id>``. The ingest worker
appends one entry per sampled frame with ``XADD <key> MAXLEN ~ <redis.maxlen> * <fields>``, so when
inference falls behind, Redis trims the *oldest* entries first (drop-oldest backpressure, per camera).
Entry ids are Redis' own (milliseconds-sequence) and increase in publish order.

Every field name and value is a byte string; numbers are ASCII decimal:

============  =================================================================================
``v``         format version, ``1``
``stream``    the stream id (same as in the key)
``seq``       per-camera sampled-frame counter of this worker process, from 0; a gap means frames
              were dropped before Redis (bus down) -- consumers must not rely on it across restarts
``ts_ns``     capture time: Unix epoch nanoseconds when the worker received the decoded frame
``h`` ``w``   frame geometry in pixels (the model input size, e.g. 224 x 224)
``c``         channels, always ``3``
``src_h``     the camera's own resolution, before resizing
``src_w``
``enc``       ``raw`` or ``jpeg``
``data``      ``raw``: ``h*w*3`` bytes, uint8 RGB, row-major (HWC), no padding;
              ``jpeg``: a baseline JPEG of the RGB frame (``redis.jpeg_quality``), ~6x smaller
============  =================================================================================

Readers call :func:`decode_frame` on an entry's field mapping and get a :class:`FrameMessage`.

Several Redis instances
-----------------------
One Redis moves only a few thousand raw 224x224 frames/s, so ``redis.urls`` may list several. Each
camera is pinned to one instance by rendezvous hashing (SHA-1 of the stream id and the instance's
``host:port/db``): stable across processes and restarts (unlike Python's salted ``hash()``),
independent of password rotation, and adding an instance moves only the cameras that land on it.
URLs may carry an ACL user and password (``redis://user:pass@host:6379/0``) and use TLS
(``rediss://``); they are only ever logged redacted.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import cv2
import numpy as np
import numpy.typing as npt
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.core.errors import BusError, BusUnavailableError, FrameFormatError
from pipeline.core.keys import frames_key
from pipeline.core.redact import redact_url

log = logging.getLogger("vigil.framebus")

WIRE_VERSION = 1
Encoding = Literal["raw", "jpeg"]
Frame = npt.NDArray[np.uint8]


def trimmed_unread_entries(info: Mapping[str, Any], groups: Sequence[Mapping[str, Any]]) -> int:
    """Entries MAXLEN trimmed off a stream before any of ``groups`` read them (from XINFO replies).

    ``entries-added - length`` entries were trimmed; a group that has read ``entries-read`` of
    them saw the first ones. With no group, every trimmed entry counts as unread.
    """
    trimmed = int(info.get("entries-added", 0)) - int(info.get("length", 0))
    read = max((int(g.get("entries-read") or 0) for g in groups), default=0)
    return max(0, trimmed - read)


@dataclass(frozen=True)
class FrameMessage:
    """One model-ready frame: uint8 RGB pixels [h, w, 3] and where/when it came from."""

    stream_id: str
    seq: int
    capture_ts_ns: int
    pixels: Frame
    source_height: int = 0
    source_width: int = 0

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def capture_time_s(self) -> float:
        return self.capture_ts_ns / 1e9


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------


def encode_frame(msg: FrameMessage, encoding: Encoding = "raw", jpeg_quality: int = 90) -> dict[str, bytes]:
    """The XADD fields of ``msg`` (see the module docstring)."""
    px = msg.pixels
    if px.dtype != np.uint8 or px.ndim != 3 or px.shape[2] != 3:
        raise FrameFormatError(f"stream {msg.stream_id}: frames must be uint8 [h, w, 3], got "
                               f"{px.dtype} {list(px.shape)}")
    if encoding == "raw":
        data = np.ascontiguousarray(px).tobytes()
    elif encoding == "jpeg":
        # OpenCV's JPEG encoder expects BGR; convert so that the decoded frame is RGB again.
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(px, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise FrameFormatError(f"stream {msg.stream_id}: JPEG encoding failed")
        data = buf.tobytes()
    else:
        raise FrameFormatError(f"unknown frame encoding {encoding!r}; use raw or jpeg")
    return {
        "v": b"%d" % WIRE_VERSION, "stream": msg.stream_id.encode(), "seq": b"%d" % msg.seq,
        "ts_ns": b"%d" % msg.capture_ts_ns, "h": b"%d" % px.shape[0], "w": b"%d" % px.shape[1],
        "c": b"3", "src_h": b"%d" % msg.source_height, "src_w": b"%d" % msg.source_width,
        "enc": encoding.encode(), "data": data,
    }


def _field(fields: Mapping[Any, Any], name: str) -> bytes:
    value = fields.get(name.encode(), fields.get(name))
    if value is None:
        raise FrameFormatError(f"frame entry has no {name!r} field")
    return value if isinstance(value, bytes) else str(value).encode()


def _int_field(fields: Mapping[Any, Any], name: str) -> int:
    raw = _field(fields, name)
    try:
        return int(raw)
    except ValueError as exc:
        raise FrameFormatError(f"frame entry field {name!r} is not an integer") from exc


def _pixels(stream: str, enc: bytes, data: bytes, h: int, w: int) -> Frame:
    if enc == b"raw":
        if len(data) != h * w * 3:
            raise FrameFormatError(f"stream {stream}: raw frame has {len(data)} bytes, expected "
                                   f"{h}*{w}*3 = {h * w * 3}")
        return np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)
    if enc == b"jpeg":
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape[:2] != (h, w):
            raise FrameFormatError(f"stream {stream}: JPEG frame does not decode to {h}x{w}")
        return cast(Frame, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    raise FrameFormatError(f"stream {stream}: unknown encoding {enc.decode(errors='replace')!r}")


def decode_frame(fields: Mapping[Any, Any]) -> FrameMessage:
    """Parse one stream entry's fields (bytes or str keys) into a :class:`FrameMessage`.

    Raw frames are zero-copy, read-only views of the entry's bytes.
    """
    version = _int_field(fields, "v")
    if version != WIRE_VERSION:
        raise FrameFormatError(f"frame entry has wire version {version}; this reader understands "
                               f"{WIRE_VERSION} (upgrade the reader)")
    stream = _field(fields, "stream").decode(errors="replace")
    h, w, c = _int_field(fields, "h"), _int_field(fields, "w"), _int_field(fields, "c")
    if h <= 0 or w <= 0 or c != 3:
        raise FrameFormatError(f"stream {stream}: bad geometry {h}x{w}x{c}")
    pixels = _pixels(stream, _field(fields, "enc"), _field(fields, "data"), h, w)
    return FrameMessage(stream_id=stream, seq=_int_field(fields, "seq"),
                        capture_ts_ns=_int_field(fields, "ts_ns"), pixels=pixels,
                        source_height=_int_field(fields, "src_h"), source_width=_int_field(fields, "src_w"))


# --------------------------------------------------------------------------------------------------
# Instances and pinning
# --------------------------------------------------------------------------------------------------


def instance_identity(url: str) -> str:
    """``host:port/db`` (or the socket path) of a Redis URL: what pinning hashes, without secrets."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    db = parts.path.lstrip("/") or "0"
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}/{db}"


def pick_instance(stream_id: str, identities: list[str]) -> int:
    """Index of the instance a camera is pinned to (rendezvous hashing over SHA-1)."""
    if not identities:
        raise BusError("the frame bus has no Redis instance (redis.urls is empty)")

    def score(ident: str) -> int:
        return int.from_bytes(hashlib.sha1(f"{stream_id}\0{ident}".encode(), usedforsecurity=False).digest()[:8], "big")

    return max(range(len(identities)), key=lambda i: score(identities[i]))


@dataclass
class _Instance:
    """One Redis connection pool plus its own up/down state and reconnect backoff."""

    index: int
    redacted_url: str
    client: redis.Redis
    lock: threading.Lock = field(default_factory=threading.Lock)
    up: bool = True
    failures: int = 0
    retry_at: float = 0.0  # time.monotonic() before which calls are skipped
    last_error: str = ""


@dataclass
class BusOptions:
    urls: list[str]
    maxlen: int = 500
    encoding: Encoding = "raw"
    jpeg_quality: int = 90
    socket_timeout_s: float = 5.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0


class FrameBus:
    """Publisher side of the bus. Use as a context manager; thread-safe (one pool per instance)."""

    def __init__(self, opts: BusOptions, on_bus_state: Any = None) -> None:
        self.opts = opts
        self._on_state = on_bus_state  # callable(index, up) or None, e.g. IngestMetrics.set_bus_up
        self._instances: list[_Instance] = []
        self._identities = [instance_identity(u) for u in opts.urls]

    def __enter__(self) -> FrameBus:
        for i, url in enumerate(self.opts.urls):
            try:
                # No client-side retries: the bus has its own backoff, and a publish must fail fast
                # so that the camera thread keeps sampling while Redis is down.
                client = redis.Redis.from_url(
                    url, socket_timeout=self.opts.socket_timeout_s,
                    socket_connect_timeout=self.opts.socket_timeout_s, retry=Retry(NoBackoff(), 0),
                    health_check_interval=0)
            except ValueError as exc:
                raise BusError(f"redis.urls[{i}] {redact_url(url)}: invalid URL ({exc})") from exc
            self._instances.append(_Instance(index=i, redacted_url=redact_url(url), client=client))
            if self._on_state is not None:
                self._on_state(i, True)
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        for inst in self._instances:
            inst.client.close()
        self._instances = []

    # -- routing -----------------------------------------------------------------------------------

    def instance_index(self, stream_id: str) -> int:
        return pick_instance(stream_id, self._identities)

    def instance_url(self, stream_id: str) -> str:
        """The redacted URL of the camera's instance (for /readyz and logs)."""
        return redact_url(self.opts.urls[self.instance_index(stream_id)])

    def client_for(self, stream_id: str) -> redis.Redis:
        return self._instance(stream_id).client

    def _instance(self, stream_id: str) -> _Instance:
        if not self._instances:
            raise BusError("the frame bus is not open (use it as a context manager)")
        return self._instances[self.instance_index(stream_id)]

    def health(self) -> list[dict[str, Any]]:
        return [{"index": i.index, "url": i.redacted_url, "up": i.up, "last_error": i.last_error}
                for i in self._instances]

    # -- calls -------------------------------------------------------------------------------------

    def _call(self, inst: _Instance, what: str, fn: Any) -> Any:
        """Run ``fn(client)`` unless the instance is backing off; track up/down and backoff."""
        with inst.lock:
            if not inst.up and time.monotonic() < inst.retry_at:
                raise BusUnavailableError(f"Redis {inst.redacted_url} is down ({inst.last_error}); "
                                          f"retrying in {inst.retry_at - time.monotonic():.1f} s")
        try:
            result = fn(inst.client)
        except (redis.RedisError, OSError) as exc:
            self._mark_down(inst, what, exc)
            raise BusError(f"Redis {inst.redacted_url}: {what} failed: {type(exc).__name__}") from exc
        if not inst.up:
            self._mark_up(inst)
        return result

    def _mark_down(self, inst: _Instance, what: str, exc: BaseException) -> None:
        with inst.lock:
            inst.failures += 1
            delay = min(self.opts.backoff_cap_s, self.opts.backoff_base_s * 2 ** min(inst.failures - 1, 30))
            delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography
            inst.retry_at = time.monotonic() + delay
            was_up, inst.up = inst.up, False
            # redis-py messages can include host names but never the password; keep just the type.
            inst.last_error = f"{what}: {type(exc).__name__}"
        if was_up:
            log.warning("frame bus: Redis %s is down (%s: %s); dropping frames for its cameras, "
                        "reconnecting with backoff", inst.redacted_url, what, type(exc).__name__)
            if self._on_state is not None:
                self._on_state(inst.index, False)

    def _mark_up(self, inst: _Instance) -> None:
        with inst.lock:
            inst.up, inst.failures, inst.last_error = True, 0, ""
        log.info("frame bus: Redis %s is back", inst.redacted_url)
        if self._on_state is not None:
            self._on_state(inst.index, True)

    def publish(self, msg: FrameMessage) -> bytes:
        """XADD one frame to its camera's stream; return the entry id.

        Raises :class:`BusUnavailableError` without any I/O while the instance is backing off, and
        :class:`BusError` when the command fails (which starts the backoff).
        """
        fields = encode_frame(msg, self.opts.encoding, self.opts.jpeg_quality)
        key = frames_key(msg.stream_id)
        entry: bytes = self._call(
            self._instance(msg.stream_id), "XADD",
            lambda c: c.xadd(key, fields, maxlen=self.opts.maxlen, approximate=True))
        return entry

    def trimmed_unread(self, stream_id: str) -> int:
        """Entries trimmed off the camera's stream that no consumer group had read (cumulative)."""
        key = frames_key(stream_id)

        def query(c: redis.Redis) -> int:
            try:
                info = c.xinfo_stream(key)
                groups = c.xinfo_groups(key) if info.get("groups") else []
            except redis.ResponseError:
                return 0  # no such stream yet
            return trimmed_unread_entries(info, groups)

        result: int = self._call(self._instance(stream_id), "XINFO", query)
        return result
