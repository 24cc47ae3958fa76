"""Model download (against a real HTTP server on loopback), cache lookup and `vigil models info`."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from pipeline.core.errors import ModelNotFoundError
from pipeline.inference import model_store as store
from pipeline.inference.model_store import PinnedModel
from tests.cli_helpers import vigil


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def pinned(url: str, data: bytes) -> PinnedModel:
    return PinnedModel("m.onnx", url, hashlib.sha256(data).hexdigest())


def test_fetch_downloads_verifies_and_caches(tmp_path: Path, shared_model: Path,
                                             http_dir: tuple[Path, str]) -> None:
    root, base = http_dir
    data = shared_model.read_bytes()
    (root / "m.onnx").write_bytes(data)
    pin = pinned(f"{base}/m.onnx", data)
    cache = tmp_path / "cache"
    path = store.fetch(cache, pinned=pin)
    assert path == cache / "m.onnx" and path.read_bytes() == data
    (root / "m.onnx").unlink()  # cached now: no second download
    assert store.fetch(cache, pinned=pin) == path
    assert list(cache.iterdir()) == [path]


def test_fetch_rejects_wrong_checksum_and_leaves_nothing(tmp_path: Path, http_dir: tuple[Path, str]) -> None:
    root, base = http_dir
    (root / "m.onnx").write_bytes(b"tampered")
    pin = PinnedModel("m.onnx", f"{base}/m.onnx", "0" * 64)
    with pytest.raises(ModelNotFoundError, match=r"has sha256 .* expected 0000"):
        store.fetch(tmp_path / "cache", pinned=pin)
    assert list((tmp_path / "cache").iterdir()) == []


def test_fetch_offline_names_the_alternatives(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: connection refused, like being offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pin = PinnedModel("m.onnx", f"http://127.0.0.1:{port}/m.onnx", "0" * 64)
    with pytest.raises(ModelNotFoundError) as info:
        store.fetch(tmp_path, pinned=pin)
    assert "--model PATH" in str(info.value) and "vigil models export" in str(info.value)


def test_pinned_model_is_pinned() -> None:
    assert len(store.MOBILENET_V2.sha256) == 64 and store.MOBILENET_V2.url.startswith("https://")


def test_default_model_path_prefers_cache(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="vigil models fetch"):
        store.default_model_path(tmp_path)
    (tmp_path / store.MOBILENET_V2.filename).write_bytes(b"x")
    assert store.default_model_path(tmp_path) == tmp_path / store.MOBILENET_V2.filename


def test_models_info_cli(shared_model: Path) -> None:
    out = vigil("models", "info", shared_model, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["sha256"] == "1ed676fb96efa6a4aaafc505a854e7e288462367feee9dcdb9b2fac6296a3b81"
    assert doc["input"] == {"name": "images", "dtype": "uint8", "layout": "NHWC", "size": [224, 224],
                            "color": "RGB", "mean": None, "std": None, "dynamic_batch": True}
    assert doc["output"]["num_classes"] == 1001 and doc["output"]["background_class"] == 0
    assert doc["classes_sample"][:2] == ["background", "tench, Tinca tinca"]
    assert doc["parameters"] == 3_489_097  # weights and biases; not the scalar input-normalisation constants
    text = vigil("models", "info", shared_model)
    assert text.returncode == 0 and "sha256    1ed676fb" in text.stdout
    assert "3,489,097 parameters (weights and biases)" in text.stdout
    # Class names that hold commas stay whole: each is quoted.
    assert 'classes   1001: "background"; "tench, Tinca tinca"; "goldfish, Carassius auratus";' in text.stdout


def test_models_info_on_non_image_model(tmp_path: Path) -> None:
    from tests.pipeline.inference.builders import not_an_image_model

    out = vigil("models", "info", not_an_image_model(tmp_path / "f.onnx"))
    assert out.returncode == 1
    assert "input 'features' is not an image tensor" in out.stderr
