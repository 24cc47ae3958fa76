"""`workers.serve_app`, the Serve application a cluster imports: what of the config it cannot honour, it says."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from workers.serve_app import build_app_from_config


def write(tmp_path: Path, model: Path, **inference: object) -> Path:
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml.safe_dump({"redis": {"urls": ["redis://127.0.0.1:6379/0"]},
                                    "inference": {"model": str(model), **inference}}))
    return path


def test_http_host_and_port_are_said_to_be_the_clusters(tmp_path: Path, shared_model: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="workers.serve_app")
    assert build_app_from_config(write(tmp_path, shared_model, http_port=8100)) is not None
    assert "inference.http_port is not used by a Serve application on a cluster" in caplog.text
    assert "http_options" in caplog.text
    caplog.clear()
    build_app_from_config(write(tmp_path, shared_model))  # not set: nothing to say
    assert caplog.text == ""
