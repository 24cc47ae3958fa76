"""Where Vigil's models come from: ``--model PATH``, the download cache, or a torchvision export.

The pinned download is the ONNX Model Zoo's MobileNetV2 (opset 12, float NCHW input, ImageNet
mean/std, 1000 logits; Apache-2.0), verified against its SHA-256 before it is used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from pipeline.core.config import cache_dir
from pipeline.core.errors import ModelNotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PinnedModel:
    filename: str
    url: str
    sha256: str


MOBILENET_V2 = PinnedModel(
    filename="mobilenetv2-12.onnx",
    url="https://github.com/onnx/models/raw/main/validated/vision/classification/mobilenet/model/mobilenetv2-12.onnx",
    sha256="c0c3f76d93fa3fd6580652a45618618a220fced18babf65774ed169de0432ad5",
)
EXPORTED_NAME = "mobilenet_v2_torchvision_uint8.onnx"

HOW_TO_GET_A_MODEL = (
    "pass --model PATH to an ONNX classifier, run `vigil models fetch` (downloads the pinned "
    f"MobileNetV2 from {MOBILENET_V2.url}; needs internet), or `vigil models export` (exports "
    "torchvision's MobileNetV2; needs `pip install 'vigil[export]'`)"
)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_model_path(cache: Path | None = None) -> Path:
    """The model used when none is given: an exported model if present, else the fetched one."""
    base = cache or cache_dir()
    for name in (EXPORTED_NAME, MOBILENET_V2.filename):
        if (base / name).is_file():
            return base / name
    raise ModelNotFoundError(f"no model given and none in the cache {base}: {HOW_TO_GET_A_MODEL}")


def resolve_model_path(explicit: str | Path | None, cache: Path | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    return default_model_path(cache)


def model_or_fetch(explicit: str | Path | None, cache: Path | None = None) -> Path:
    """``explicit``, else the cached model, else the pinned download (fetched once into the cache)."""
    if explicit:
        return resolve_model_path(explicit)
    try:
        return default_model_path(cache)
    except ModelNotFoundError:
        log.info("no model in the cache %s: downloading the pinned MobileNetV2 (%s, about 14 MB), once",
                 cache or cache_dir(), MOBILENET_V2.url)
        return fetch(cache)


def fetch(dest_dir: Path | None = None, *, force: bool = False, pinned: PinnedModel = MOBILENET_V2,
          timeout_s: float = 60.0) -> Path:
    """Download ``pinned`` into ``dest_dir`` (default: the cache), verify its checksum, return its path."""
    dest_dir = dest_dir or cache_dir()
    target = dest_dir / pinned.filename
    if target.is_file() and not force:
        if sha256_file(target) == pinned.sha256:
            log.info("model already cached at %s (checksum ok)", target)
            return target
        log.warning("cached %s has the wrong checksum; downloading it again", target)
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=".download-", suffix=".onnx")
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, httpx.stream("GET", pinned.url, follow_redirects=True,
                                                       timeout=timeout_s) as resp:
            resp.raise_for_status()
            for block in resp.iter_bytes(1 << 20):
                out.write(block)
                h.update(block)
    except httpx.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise ModelNotFoundError(f"cannot download {pinned.url} ({type(exc).__name__}: {exc}). Offline? "
                                 "Then pass --model PATH to an ONNX file you have, or run "
                                 "`vigil models export` (torchvision weights)") from exc
    if h.hexdigest() != pinned.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelNotFoundError(f"download of {pinned.url} has sha256 {h.hexdigest()}, expected "
                                 f"{pinned.sha256}; the file was discarded (proxy or truncated download?)")
    tmp.replace(target)
    log.info("downloaded %s to %s (sha256 ok)", pinned.url, target)
    return target
