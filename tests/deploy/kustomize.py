"""A small kustomize, enough for k8s/: so the manifests can be rendered and validated with no binary.

It implements exactly the features k8s/ uses, with kustomize's semantics:

* ``resources`` (files and kustomization folders) and ``components`` (``kind: Component``);
* ``namespace`` (set on every namespaced object);
* ``images`` (``name`` -> ``newName``/``newTag`` on every ``containers``/``initContainers`` image,
  whatever the kind, custom resources included);
* ``configMapGenerator`` (``files``, ``literals``; ``behavior`` create/replace/merge) and
  ``generatorOptions`` (``disableNameSuffixHash: true`` only, and ``labels``);
* ``patches`` as RFC 6902 JSON patches from a file, with a ``target`` (group, version, kind, name).

Anything else in a kustomization is an error, so a feature added to k8s/ cannot be silently ignored.
When ``kubectl`` is installed, tests/deploy/test_manifests.py checks this renderer against
``kubectl kustomize``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

_KNOWN_KEYS = {"apiVersion", "kind", "resources", "components", "namespace", "images", "configMapGenerator",
               "generatorOptions", "patches"}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                   "PersistentVolume", "StorageClass", "PriorityClass"}


class KustomizeError(ValueError):
    pass


def load_yaml_documents(path: Path) -> list[Resource]:
    # Deep copies: YAML aliases (&anchors) must not make two places of a manifest one object.
    return [copy.deepcopy(d) for d in yaml.safe_load_all(path.read_text()) if d]


def build(folder: Path) -> list[Resource]:
    """Render the kustomization in ``folder`` (what ``kubectl kustomize folder`` prints, unordered)."""
    return _build(folder.resolve(), component=False)


def _kustomization(folder: Path) -> dict[str, Any]:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (folder / name).is_file():
            doc: dict[str, Any] = yaml.safe_load((folder / name).read_text())
            unknown = set(doc) - _KNOWN_KEYS
            if unknown:
                raise KustomizeError(f"{folder}: unsupported kustomization fields {sorted(unknown)}")
            return doc
    raise KustomizeError(f"{folder} has no kustomization.yaml")


def _build(folder: Path, component: bool, inherited: list[Resource] | None = None) -> list[Resource]:
    k = _kustomization(folder)
    if (k.get("kind") == "Component") != component:
        raise KustomizeError(f"{folder}: a Component must be listed under components:, and only there")
    out: list[Resource] = list(inherited or [])
    for entry in k.get("resources", []):
        path = (folder / entry).resolve()
        out.extend(_build(path, component=False) if path.is_dir() else load_yaml_documents(path))
    for entry in k.get("components", []):
        out = _build((folder / entry).resolve(), component=True, inherited=out)
    options = k.get("generatorOptions", {})
    for gen in k.get("configMapGenerator", []):
        out = _config_map(folder, gen, options, out)
    for patch in k.get("patches", []):
        _apply_patch(folder, patch, out)
    for image in k.get("images", []):
        for res in out:
            _set_images(res, image)
    if "namespace" in k:
        for res in out:
            if res["kind"] not in _CLUSTER_SCOPED:
                res.setdefault("metadata", {})["namespace"] = k["namespace"]
    _check_unique(out, folder)
    return out


def _check_unique(resources: list[Resource], folder: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for r in resources:
        key = (r["kind"], r["metadata"].get("namespace", ""), r["metadata"]["name"])
        if key in seen:
            raise KustomizeError(f"{folder}: {key} is defined twice")
        seen.add(key)


# ------------------------------------------------------------------ configMapGenerator
def _config_map(folder: Path, gen: dict[str, Any], options: dict[str, Any], out: list[Resource]) -> list[Resource]:
    unknown = set(gen) - {"name", "files", "literals", "behavior"}
    if unknown or set(options) - {"disableNameSuffixHash", "labels"}:
        raise KustomizeError(f"{folder}: unsupported configMapGenerator options {sorted(unknown)}")
    if not options.get("disableNameSuffixHash"):
        raise KustomizeError(f"{folder}: name suffix hashes are not implemented; set disableNameSuffixHash")
    data: dict[str, str] = {}
    for entry in gen.get("files", []):
        key, _, rel = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
        data[key] = (folder / rel).read_text()
    for literal in gen.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    behavior = gen.get("behavior", "create")
    existing = [r for r in out if r["kind"] == "ConfigMap" and r["metadata"]["name"] == gen["name"]]
    if behavior == "create":
        if existing:
            raise KustomizeError(f"{folder}: ConfigMap {gen['name']} exists; use behavior merge or replace")
        cm: Resource = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}
        if options.get("labels"):
            cm["metadata"]["labels"] = dict(options["labels"])
        return [*out, cm]
    if len(existing) != 1:
        raise KustomizeError(f"{folder}: behavior {behavior} needs exactly one ConfigMap {gen['name']} to change")
    target = existing[0]
    if behavior == "replace":
        target["data"] = data
    elif behavior == "merge":
        target.setdefault("data", {}).update(data)
    else:
        raise KustomizeError(f"{folder}: unknown behavior {behavior!r}")
    if options.get("labels"):
        target["metadata"].setdefault("labels", {}).update(options["labels"])
    return out


# ------------------------------------------------------------------ images
def _set_images(node: Any, image: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for c in value:
                    if isinstance(c, dict) and isinstance(c.get("image"), str):
                        c["image"] = _new_image(c["image"], image)
            _set_images(value, image)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, image)


def _new_image(current: str, image: dict[str, str]) -> str:
    name, tag = current, ""
    if "@" in current:
        name, tag = current.split("@", 1)
        tag = "@" + tag
    elif ":" in current.rsplit("/", 1)[-1]:
        name, tag = current.rsplit(":", 1)
        tag = ":" + tag
    if name != image["name"]:
        return current
    if "digest" in image:
        tag = "@" + image["digest"]
    elif "newTag" in image:
        tag = ":" + image["newTag"]
    return image.get("newName", name) + tag


# ------------------------------------------------------------------ patches (RFC 6902)
def _matches(res: Resource, target: dict[str, str]) -> bool:
    group, _, version = res["apiVersion"].rpartition("/")
    return (target.get("kind", res["kind"]) == res["kind"]
            and target.get("name", res["metadata"]["name"]) == res["metadata"]["name"]
            and target.get("group", group) == group and target.get("version", version) == version)


def _apply_patch(folder: Path, patch: dict[str, Any], out: list[Resource]) -> None:
    if set(patch) - {"path", "target"} or "target" not in patch:
        raise KustomizeError(f"{folder}: only JSON patches from a file, with a target, are implemented")
    ops = yaml.safe_load((folder / patch["path"]).read_text())
    if not isinstance(ops, list):
        raise KustomizeError(f"{folder / patch['path']}: not a JSON patch (a list of operations)")
    targets = [r for r in out if _matches(r, patch["target"])]
    if not targets:
        raise KustomizeError(f"{folder}: patch {patch['path']} matches no resource")
    for res in targets:
        for op in ops:
            json_patch(res, op)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Resource, op: dict[str, Any]) -> None:
    """Apply one RFC 6902 operation (add, remove, replace) in place."""
    *parents, last = _pointer(op["path"])
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if kind == "add":
            node.insert(index, copy.deepcopy(op["value"]))
        elif kind == "remove":
            del node[index]
        elif kind == "replace":
            node[index] = copy.deepcopy(op["value"])
        else:
            raise KustomizeError(f"unsupported JSON patch op {kind!r}")
        return
    if kind in ("remove", "replace") and last not in node:
        raise KustomizeError(f"JSON patch {kind} {op['path']}: no such member")
    if kind == "remove":
        del node[last]
    elif kind in ("add", "replace"):
        node[last] = copy.deepcopy(op["value"])
    else:
        raise KustomizeError(f"unsupported JSON patch op {kind!r}")
