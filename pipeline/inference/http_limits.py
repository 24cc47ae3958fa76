"""What ``POST /classify`` accepts: an authorised request, a body and an image within the limits.

Checked before anything is decoded, so a client cannot make a replica read a 200 MB body or decode a
small file that declares 20000x20000 pixels (1.2 GB of RGB): the body is read in chunks up to
``inference.http_max_body_mb`` (a larger ``Content-Length`` is refused without reading at all), and
the image's size is read from its header (Pillow opens images lazily) against
``inference.http_max_pixels``. With ``inference.http_token`` set, every request needs
``Authorization: Bearer <token>`` (compared in constant time; never logged or echoed).
"""

from __future__ import annotations

import hmac
import io

from PIL import Image, UnidentifiedImageError
from starlette.requests import Request

from pipeline.core.config import InferenceConfig

# Pillow only reads headers here; its own decompression-bomb check (a warning past 89 MP, an error past
# 179 MP, whatever the config says) would pre-empt inference.http_max_pixels, which is the one limit.
Image.MAX_IMAGE_PIXELS = None


class Rejected(Exception):
    """The request is refused with ``status`` and ``message`` (the JSON ``error``)."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(message)


def check_token(request: Request, inference: InferenceConfig) -> None:
    if inference.http_token is None:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {inference.http_token}".encode()):
        raise Rejected(401, "missing or wrong bearer token: send Authorization: Bearer <inference.http_token>")


async def read_body(request: Request, inference: InferenceConfig) -> bytes:
    """The body, at most ``http_max_body_mb``; :class:`Rejected` (413) past it, without reading the rest."""
    limit = int(inference.http_max_body_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"the body has {int(declared)} bytes; inference.http_max_body_mb allows {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(413, f"the body is larger than inference.http_max_body_mb ({limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def check_pixels(body: bytes, inference: InferenceConfig) -> None:
    """Refuse an image whose header declares more than ``http_max_pixels`` (no pixel is decoded here)."""
    try:
        with Image.open(io.BytesIO(body)) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise Rejected(400, "the request body is not a PNG/JPEG/BMP/WebP/TIFF image") from exc
    if width * height > inference.http_max_pixels:
        raise Rejected(413, f"the image is {width}x{height} = {width * height} pixels; inference.http_max_pixels "
                            f"allows {inference.http_max_pixels}")
