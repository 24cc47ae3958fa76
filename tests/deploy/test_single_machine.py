"""The single-machine deployments in deploy/: a systemd unit and a compose file for `vigil run`.

How each delivers the stop: systemd with ``KillMode=mixed`` sends SIGTERM to the main process, then SIGKILL to
what is left after ``TimeoutStopSec``; ``docker compose stop`` sends SIGTERM to the container's init (tini),
which passes it to the main process. `vigil run` stopping within 15 s, with its summary and no process left, on
SIGTERM to its main process (and to its whole process group) is tested in tests/pipeline/cli/test_run_signals.py;
here, that each file delivers the stop that way and leaves it the time it needs.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
STOP_S = 15  # what vigil run needs at most, summary included


def test_the_systemd_unit_is_valid_and_stops_the_main_process_first(tmp_path: Path) -> None:
    text = (REPO / "deploy" / "systemd" / "vigil.service").read_text()
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    service = unit["Service"]
    assert service["KillMode"] == "mixed" and service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > STOP_S
    assert service["ExecStart"].split()[1:4] == ["run", "--config", "/etc/vigil/vigil.yaml"]
    # systemd's own checker, with ExecStart pointed at this checkout's vigil (it checks the binary exists).
    vigil = Path(sys.executable).with_name("vigil")
    local = tmp_path / "vigil.service"
    local.write_text(text.replace("/opt/vigil/bin/vigil", str(vigil)))
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
    out = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_the_compose_file_stops_vigil_run_through_an_init_with_time_to_spare() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose" / "compose.yaml").read_text())
    vigil = compose["services"]["vigil"]
    assert vigil["init"] is True and vigil["stop_signal"] == "SIGTERM"
    grace = vigil["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > STOP_S
    assert vigil["command"][:2] == ["run", "--config"]
    target = vigil["build"]["target"]
    assert f" AS {target}\n" in (REPO / "Dockerfile").read_text(), f"no build target {target} in the Dockerfile"
    assert vigil["build"]["context"] == "../.."
