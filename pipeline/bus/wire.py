"""The frame bus's wire format: one sampled frame, cut into its zones' model-ready crops, as the fields of
one Redis Streams entry.

Wire format (version 2)
-----------------------
Each camera ``<stream_id>`` has one Redis Stream, key ``vigil:frames:<stream_id>``. The ingest worker
appends one entry per sampled frame (with :data:`pipeline.bus.scripts.TRIM_OVER_MAXLEN`): when inference falls
behind, the oldest entries are trimmed first (drop-oldest backpressure, per camera). Entry ids
are Redis' own (milliseconds-sequence) and increase in publish order.

A frame carries one crop per zone of its camera (``streams[].zones``; the whole picture is the zone
``full``), all decoded from the same camera frame, so they travel, wait and are dropped together.
Every field name and value is a byte string; numbers are ASCII decimal:

============  =================================================================================
``v``         format version, ``2``
``stream``    the stream id (same as in the key)
``seq``       per-camera sampled-frame counter of this worker process, from 0; a gap means frames
              were dropped before Redis (bus down) -- consumers must not rely on it across restarts
``ts_ns``     capture time: Unix epoch nanoseconds when the worker received the decoded frame
``zones``     the zone ids of the crops, comma-separated, in the order of ``data``
``h`` ``w``   each crop's geometry in pixels (the model input size, e.g. 224 x 224)
``c``         channels, always ``3``
``src_h``     the camera's own resolution, before cutting and resizing
``src_w``
``enc``       ``raw`` or ``jpeg``
``data``      ``raw``: the crops' ``h*w*3`` bytes each, uint8 RGB, row-major (HWC), no padding, one
              after the other; ``jpeg``: baseline JPEGs of the RGB crops (``redis.jpeg_quality``,
              ~6x smaller), one after the other
``sizes``     ``jpeg`` only: each JPEG's length in bytes, comma-separated
============  =================================================================================

Version 1 (before zones: no ``zones``, one crop) is still read, as the zone ``full``.
Readers call :func:`decode_frame` on an entry's field mapping and get a :class:`FrameMessage`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import cv2
import numpy as np
from redis.typing import EncodableT, FieldT

from pipeline.core.config import FULL_ZONE
from pipeline.core.errors import FrameFormatError
from pipeline.core.frame import Frame

WIRE_VERSION = 2
READABLE_VERSIONS = (1, 2)
Encoding = Literal["raw", "jpeg"]


@dataclass(frozen=True)
class ZoneCrop:
    """One zone's model-ready pixels: uint8 RGB [h, w, 3]."""

    zone: str
    pixels: Frame


@dataclass(frozen=True)
class FrameMessage:
    """One sampled frame: its zones' model-ready crops and where/when it came from."""

    stream_id: str
    seq: int
    capture_ts_ns: int
    crops: tuple[ZoneCrop, ...]
    source_height: int = 0
    source_width: int = 0

    @classmethod
    def whole(cls, stream_id: str, seq: int, capture_ts_ns: int, pixels: Frame, *, source_height: int = 0,
              source_width: int = 0) -> FrameMessage:
        """A frame with one crop: the whole picture (the zone ``full``)."""
        return cls(stream_id, seq, capture_ts_ns, (ZoneCrop(FULL_ZONE, pixels),), source_height, source_width)

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(c.zone for c in self.crops)

    def crop(self, zone: str = FULL_ZONE) -> Frame:
        """The pixels of ``zone``'s crop (KeyError when the frame has none)."""
        for c in self.crops:
            if c.zone == zone:
                return c.pixels
        raise KeyError(f"frame {self.seq} of {self.stream_id} has no zone {zone!r} (it has {', '.join(self.zones)})")

    @property
    def height(self) -> int:
        return int(self.crops[0].pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.crops[0].pixels.shape[1])

    @property
    def capture_time_s(self) -> float:
        return self.capture_ts_ns / 1e9


def _check_crops(msg: FrameMessage) -> tuple[int, int]:
    if not msg.crops:
        raise FrameFormatError(f"stream {msg.stream_id}: a frame needs at least one crop")
    shape = msg.crops[0].pixels.shape
    for c in msg.crops:
        px = c.pixels
        if px.dtype != np.uint8 or px.ndim != 3 or px.shape[2] != 3 or px.shape != shape:
            raise FrameFormatError(f"stream {msg.stream_id}: crops must be uint8 [h, w, 3] of one size, got "
                                   f"{px.dtype} {list(px.shape)} for zone {c.zone!r}")
        if not c.zone or "," in c.zone:
            raise FrameFormatError(f"stream {msg.stream_id}: bad zone id {c.zone!r}")
    return int(shape[0]), int(shape[1])


def _jpeg(stream_id: str, px: Frame, quality: int) -> bytes:
    # OpenCV's JPEG encoder expects BGR; convert so that the decoded crop is RGB again.
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(px, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise FrameFormatError(f"stream {stream_id}: JPEG encoding failed")
    return bytes(buf.tobytes())


def encode_frame(msg: FrameMessage, encoding: Encoding = "raw",
                 jpeg_quality: int = 90) -> dict[FieldT, EncodableT]:
    """The XADD fields of ``msg`` (see the module docstring): ``str`` names, ``bytes`` values, typed as XADD takes
    them (redis-py's ``dict[FieldT, EncodableT]``, invariant: a ``dict[str, bytes]`` is not one)."""
    h, w = _check_crops(msg)
    extra: dict[FieldT, EncodableT] = {}
    if encoding == "raw":
        data = b"".join(np.ascontiguousarray(c.pixels).tobytes() for c in msg.crops)
    elif encoding == "jpeg":
        jpegs = [_jpeg(msg.stream_id, c.pixels, jpeg_quality) for c in msg.crops]
        data, extra = b"".join(jpegs), {"sizes": ",".join(str(len(j)) for j in jpegs).encode()}
    else:
        raise FrameFormatError(f"unknown frame encoding {encoding!r}; use raw or jpeg")
    return {
        "v": b"%d" % WIRE_VERSION, "stream": msg.stream_id.encode(), "seq": b"%d" % msg.seq,
        "ts_ns": b"%d" % msg.capture_ts_ns, "zones": ",".join(msg.zones).encode(), "h": b"%d" % h, "w": b"%d" % w,
        "c": b"3", "src_h": b"%d" % msg.source_height, "src_w": b"%d" % msg.source_width,
        "enc": encoding.encode(), "data": data, **extra,
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


def _raw_crops(stream_id: str, data: bytes, count: int, h: int, w: int) -> list[Frame]:
    if len(data) != count * h * w * 3:
        raise FrameFormatError(f"stream {stream_id}: raw frame has {len(data)} bytes, expected "
                               f"{count} crop(s) of {h}*{w}*3 = {count * h * w * 3}")
    return list(np.frombuffer(data, dtype=np.uint8).reshape(count, h, w, 3))


def _jpeg_crops(stream_id: str, data: bytes, sizes: list[int], h: int, w: int) -> list[Frame]:
    if sum(sizes) != len(data) or min(sizes) <= 0:
        raise FrameFormatError(f"stream {stream_id}: JPEG sizes {sizes} do not split the {len(data)} bytes of data")
    out, at = [], 0
    for size in sizes:
        try:
            bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8, count=size, offset=at), cv2.IMREAD_COLOR)
        except cv2.error as exc:  # OpenCV's own error on input it refuses: a bad frame, not a crash
            raise FrameFormatError(f"stream {stream_id}: JPEG crop cannot be decoded: {exc}") from exc
        if bgr is None or bgr.shape[:2] != (h, w):
            raise FrameFormatError(f"stream {stream_id}: JPEG crop does not decode to {h}x{w}")
        out.append(cast(Frame, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        at += size
    return out


def _crops(fields: Mapping[Any, Any], version: int, stream_id: str, h: int, w: int) -> tuple[ZoneCrop, ...]:
    zones = _field(fields, "zones").decode(errors="replace").split(",") if version >= 2 else [FULL_ZONE]
    enc, data = _field(fields, "enc"), _field(fields, "data")
    if enc == b"raw":
        pixels = _raw_crops(stream_id, data, len(zones), h, w)
    elif enc == b"jpeg":
        sizes = _field(fields, "sizes").split(b",") if version >= 2 else [b"%d" % len(data)]
        try:
            pixels = _jpeg_crops(stream_id, data, [int(x) for x in sizes], h, w)
        except ValueError as exc:
            raise FrameFormatError(f"stream {stream_id}: frame entry field 'sizes' is not a list of integers") from exc
    else:
        raise FrameFormatError(f"stream {stream_id}: unknown encoding {enc.decode(errors='replace')!r}")
    if len(pixels) != len(zones):
        raise FrameFormatError(f"stream {stream_id}: {len(zones)} zone(s) but {len(pixels)} crop(s)")
    return tuple(ZoneCrop(z, p) for z, p in zip(zones, pixels, strict=True))


def decode_frame(fields: Mapping[Any, Any], in_stream: str | None = None) -> FrameMessage:
    """Parse one stream entry's fields (bytes or str keys) into a :class:`FrameMessage`.

    Raw crops are zero-copy, read-only views of the entry's bytes. ``in_stream`` is the camera whose
    stream the entry was read from: an entry that names another camera is rejected, since trusting
    it would label the frame, and count it, as the other camera's.
    """
    version = _int_field(fields, "v")
    if version not in READABLE_VERSIONS:
        raise FrameFormatError(f"frame entry has wire version {version}; this reader understands "
                               f"{', '.join(map(str, READABLE_VERSIONS))} (upgrade the reader)")
    stream_id = _field(fields, "stream").decode(errors="replace")
    if in_stream is not None and stream_id != in_stream:
        raise FrameFormatError(f"frame entry in vigil:frames:{in_stream} says it is from stream {stream_id!r}: "
                               "a writer other than Vigil's ingest put it there")
    h, w, c = _int_field(fields, "h"), _int_field(fields, "w"), _int_field(fields, "c")
    if h <= 0 or w <= 0 or c != 3:
        raise FrameFormatError(f"stream {stream_id}: bad geometry {h}x{w}x{c}")
    return FrameMessage(stream_id=stream_id, seq=_int_field(fields, "seq"),
                        capture_ts_ns=_int_field(fields, "ts_ns"), crops=_crops(fields, version, stream_id, h, w),
                        source_height=_int_field(fields, "src_h"), source_width=_int_field(fields, "src_w"))
