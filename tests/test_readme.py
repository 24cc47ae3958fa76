"""The README's commands and config are real: the first block runs the demo, the Quick start config is valid."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.inference.model_store import MOBILENET_V2
from tests.cli_helpers import vigil

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_first_block_is_what_a_newcomer_runs() -> None:
    first = _blocks("bash")[0].splitlines()
    assert README.startswith("```bash\n")
    assert "pip install -e '.[dev]'" in first[0] and "vigil demo my-video.mp4" in first[0]
    assert "../shared" not in first[0]  # a user has no ../shared; the developer form comes further down
    assert first[1].startswith("python -m pytest")
    assert "vigil demo ../shared/testdata/video/slideshow.mp4 --model ../shared/models/" in README


def test_quick_start_config_checks_ok(tmp_path: Path, shared_model: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(_blocks("yaml")[0])
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / MOBILENET_V2.filename).symlink_to(shared_model)  # the model `vigil models fetch` would have cached
    out = vigil("config", "check", config, env={"FRONT_DOOR_PASSWORD": "x", "VIGIL_CACHE_DIR": str(cache)})
    assert out.returncode == 0, out.stderr
    assert "OK: 1 stream(s)" in out.stdout
    unset = vigil("config", "check", config, env={"VIGIL_CACHE_DIR": str(cache)})
    assert unset.returncode == 2 and "${FRONT_DOOR_PASSWORD} is not set" in unset.stderr
