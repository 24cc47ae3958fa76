"""`vigil capture`: frames of a live RTSP camera saved for labelling (real GStreamer RTSP server)."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import yaml

from models.capture import parse_interval
from pipeline.core.errors import ConfigError
from tests.cli_helpers import vigil
from tests.fixtures.services import RtspServer, free_port


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "vigil.yaml"
    zones = [{"id": "left", "xyxy": [0.0, 0.25, 0.5, 0.75]}]
    path.write_text(yaml.safe_dump({"streams": [{"id": "gate", "url": url, "zones": zones}],
                                    "ingest": {"open_timeout_s": 3, "read_timeout_s": 2}}))
    return path


@pytest.mark.parametrize(("text", "seconds"), [("5s", 5.0), ("500ms", 0.5), ("2m", 120.0), ("1.5", 1.5),
                                               (" 1h ", 3600.0)])
def test_parse_interval(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "-1s", "5 parsecs", "s"])
def test_parse_interval_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="not a positive duration"):
        parse_interval(text)


def test_capture_saves_frames_of_a_live_camera(tmp_path: Path, rtsp_server: RtspServer) -> None:
    cfg = _config(tmp_path, rtsp_server.url("slideshow"))
    out = vigil("capture", "--config", cfg, "--stream", "gate", "--every", "300ms", "--out", tmp_path / "frames",
                "--count", "3", timeout_s=60)
    assert out.returncode == 0, out.stderr
    files = sorted((tmp_path / "frames").glob("gate_*.jpg"))
    assert len(files) == 3, out.stderr
    assert "3 frame(s)" in out.stdout
    for f in files:
        img = cv2.imread(str(f))
        assert img is not None and img.shape == (480, 640, 3)  # full camera resolution


def test_capture_saves_a_zone_as_the_pipeline_cuts_it(tmp_path: Path, rtsp_server: RtspServer) -> None:
    cfg = _config(tmp_path, rtsp_server.url("slideshow"))
    out = vigil("capture", "--config", cfg, "--stream", "gate", "--zone", "left", "--out", tmp_path / "z",
                "--count", "2", timeout_s=60)
    assert out.returncode == 0, out.stderr
    files = sorted((tmp_path / "z").glob("gate_left_*.jpg"))
    assert len(files) == 2 and all(cv2.imread(str(f)).shape == (240, 320, 3) for f in files)  # half of 640x480
    out = vigil("capture", "--config", cfg, "--stream", "gate", "--zone", "door", "--out", tmp_path / "z")
    assert out.returncode == 2 and "camera 'gate' has no zone 'door' (its zones: left)" in out.stderr


def test_capture_errors(tmp_path: Path, rtsp_server: RtspServer) -> None:
    cfg = _config(tmp_path, rtsp_server.url("slideshow"))
    out = vigil("capture", "--config", cfg, "--stream", "nope", "--out", tmp_path / "f", "--count", "1")
    assert out.returncode == 2 and "no stream 'nope' in the config (streams: gate)" in out.stderr
    dead = _config(tmp_path, f"rtsp://127.0.0.1:{free_port()}/cam")
    out = vigil("capture", "--config", dead, "--stream", "gate", "--out", tmp_path / "f", "--count", "1")
    assert out.returncode == 1 and "connection refused" in out.stderr, out.stderr
