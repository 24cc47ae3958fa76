"""Rendering k8s/ and validating its manifests against vendored schemas (offline)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.deploy.kustomize import Resource, build

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = {name: K8S / "overlays" / name for name in ("cpu", "gpu")}
SCHEMAS = Path(__file__).resolve().parent / "schemas"


@functools.cache
def _k8s_schemas() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SCHEMAS / "kubernetes-strict.json").read_text())
    return doc


@functools.cache
def _crd_schemas() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((SCHEMAS / "crds.yaml").read_text())
    return {k: v for k, v in doc.items() if not k.startswith("x-")}


def kubernetes_version() -> str:
    return str(_k8s_schemas()["kubernetes"])


def resource_key(res: Resource) -> str:
    return f"{res['apiVersion']}/{res['kind']}"


@functools.cache
def _validator(key: str) -> jsonschema.protocols.Validator:
    k8s = _k8s_schemas()
    defs = dict(k8s["$defs"])
    if key in k8s["kinds"]:
        schema = dict(k8s["kinds"][key])
    elif key in _crd_schemas():
        schema = dict(_crd_schemas()[key])
        defs.update(schema.pop("x-defs", {}))
    else:
        raise KeyError(f"no schema for {key}: vendor it into tests/deploy/schemas/")
    schema["$defs"] = defs
    validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator_cls.check_schema(schema)
    return validator_cls(schema)


def validation_errors(res: Resource) -> list[str]:
    """Every schema violation of one manifest, as ``kind/name: path: message``."""
    name = f"{res.get('kind')}/{res.get('metadata', {}).get('name')}"
    try:
        validator = _validator(resource_key(res))
    except KeyError as exc:
        return [f"{name}: {exc.args[0]}"]
    return [f"{name}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(res), key=lambda e: list(map(str, e.absolute_path)))]


@functools.cache
def _rendered(folder: Path) -> str:
    return json.dumps(build(folder))


def render(folder: Path) -> list[Resource]:
    """The manifests of a kustomization (a fresh copy each call: tests may change them)."""
    docs: list[Resource] = json.loads(_rendered(folder))
    return docs


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    for r in resources:
        if r["kind"] == kind and r["metadata"]["name"] == name:
            return r
    raise KeyError(f"{kind}/{name}")


def pod_specs(res: Resource) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod template in a manifest (workloads and RayService groups)."""
    spec = res.get("spec", {})
    if res["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield f"{res['kind']}/{res['metadata']['name']}", spec["template"]["spec"]
    elif res["kind"] == "RayService":
        cluster = spec["rayClusterConfig"]
        yield "RayService head", cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster.get("workerGroupSpecs", []):
            yield f"RayService worker group {group['groupName']}", group["template"]["spec"]


def pod_templates(res: Resource) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod template metadata labels) like :func:`pod_specs`."""
    spec = res.get("spec", {})
    if res["kind"] in ("Deployment", "StatefulSet"):
        yield res["metadata"]["name"], spec["template"]["metadata"].get("labels", {})
    elif res["kind"] == "RayService":
        cluster = spec["rayClusterConfig"]
        yield "ray head", cluster["headGroupSpec"]["template"]["metadata"].get("labels", {})
        for group in cluster.get("workerGroupSpecs", []):
            yield f"ray {group['groupName']}", group["template"]["metadata"].get("labels", {})


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels + matchExpressions In/NotIn/Exists/DoesNotExist)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True
