"""The frame bus's wire format: one model-ready frame as the fields of one Redis Streams entry.

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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import cv2
import numpy as np
from redis.typing import EncodableT, FieldT

from pipeline.core.errors import FrameFormatError
from pipeline.core.frame import Frame

WIRE_VERSION = 1
Encoding = Literal["raw", "jpeg"]


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


def encode_frame(msg: FrameMessage, encoding: Encoding = "raw",
                 jpeg_quality: int = 90) -> dict[FieldT, EncodableT]:
    """The XADD fields of ``msg`` (see the module docstring): ``str`` names, ``bytes`` values, typed as XADD takes
    them (redis-py's ``dict[FieldT, EncodableT]``, invariant: a ``dict[str, bytes]`` is not one)."""
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


def _pixels(stream_id: str, enc: bytes, data: bytes, h: int, w: int) -> Frame:
    if enc == b"raw":
        if len(data) != h * w * 3:
            raise FrameFormatError(f"stream {stream_id}: raw frame has {len(data)} bytes, expected "
                                   f"{h}*{w}*3 = {h * w * 3}")
        return np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)
    if enc == b"jpeg":
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape[:2] != (h, w):
            raise FrameFormatError(f"stream {stream_id}: JPEG frame does not decode to {h}x{w}")
        return cast(Frame, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    raise FrameFormatError(f"stream {stream_id}: unknown encoding {enc.decode(errors='replace')!r}")


def decode_frame(fields: Mapping[Any, Any], in_stream: str | None = None) -> FrameMessage:
    """Parse one stream entry's fields (bytes or str keys) into a :class:`FrameMessage`.

    Raw frames are zero-copy, read-only views of the entry's bytes. ``in_stream`` is the camera whose
    stream the entry was read from: an entry that names another camera is rejected, since trusting
    it would label the frame, and count it, as the other camera's.
    """
    version = _int_field(fields, "v")
    if version != WIRE_VERSION:
        raise FrameFormatError(f"frame entry has wire version {version}; this reader understands "
                               f"{WIRE_VERSION} (upgrade the reader)")
    stream_id = _field(fields, "stream").decode(errors="replace")
    if in_stream is not None and stream_id != in_stream:
        raise FrameFormatError(f"frame entry in vigil:frames:{in_stream} says it is from stream {stream_id!r}: "
                               "a writer other than Vigil's ingest put it there")
    h, w, c = _int_field(fields, "h"), _int_field(fields, "w"), _int_field(fields, "c")
    if h <= 0 or w <= 0 or c != 3:
        raise FrameFormatError(f"stream {stream_id}: bad geometry {h}x{w}x{c}")
    pixels = _pixels(stream_id, _field(fields, "enc"), _field(fields, "data"), h, w)
    return FrameMessage(stream_id=stream_id, seq=_int_field(fields, "seq"),
                        capture_ts_ns=_int_field(fields, "ts_ns"), pixels=pixels,
                        source_height=_int_field(fields, "src_h"), source_width=_int_field(fields, "src_w"))
